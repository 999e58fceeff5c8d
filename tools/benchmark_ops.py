"""Benchmark of the compiled ops against their pure-PyTorch references.

For each op and size: forward and forward+backward wall time of ours (compiled kernel) and of the
reference, side by side in one run (the two are timed alternately, so machine load hits both
alike), with 1 and 2 threads, plus the peak memory of one forward+backward.

    python tools/benchmark_ops.py                       # every op, every size
    python tools/benchmark_ops.py --ops ms_deform_attn --threads 2 --repeat 3

Each op contributes a ``bench_<op>(args)`` function returning table rows and a workload factory
registered in ``WORKLOADS`` (used by the memory probe); ``main()`` runs the selected ops and prints
one table per op with the shared printer.

Peak memory: torch has no CPU allocator statistics and ``tracemalloc`` does not see tensor
memory, so each (op, size, implementation) runs once more in a fresh subprocess that builds the
inputs, resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``), runs one
forward+backward and reports ``VmHWM - VmRSS(before)``: the peak growth of resident memory caused
by the call (activations, workspaces, gradients). torch's CPU allocator returns large blocks to
the OS on free, so this is the real peak, not an allocator artefact.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

IMPLS = ("ours", "reference")


# ----------------------------------------------------------------------------------------------
# Shared measurement and printing
# ----------------------------------------------------------------------------------------------
def time_pair(make_calls, repeat):
    """Median wall time (s) of each implementation's callable, timed alternately after a warm-up.

    ``make_calls`` maps impl name -> zero-argument callable.
    """
    times = {name: [] for name in make_calls}
    for name, call in make_calls.items():  # warm-up: first-touch allocations, lazy init
        call()
    for _ in range(repeat):
        for name, call in make_calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(op, case, impl, threads):
    """Runs in a fresh subprocess: peak RSS growth (MB) of one forward+backward."""
    torch.set_num_threads(threads)
    step = WORKLOADS[op](case, impl)["forward_backward"]
    try:  # reset VmHWM to the current RSS so setup allocations do not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = _status_kb("VmRSS")
    step()
    return (_status_kb("VmHWM") - before) / 1024.0


def peak_memory_mb(op, case, impl, threads):
    """Peak memory of one forward+backward, measured in a fresh Python process (see module doc)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", json.dumps([op, case, impl, threads])]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return float("nan")
    return float(result.stdout.strip().splitlines()[-1])


def print_table(title, headers, rows):
    """Plain-text table: one header row, right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    line = "  ".join("-" * w for w in widths)
    print(line)
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print(line)
    print(line, flush=True)


def _fmt(value):
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def compare_rows(op, case, label, threads_list, repeat, with_memory):
    """Table rows (one per thread count) comparing ours with the reference on one size."""
    rows = []
    calls = {impl: WORKLOADS[op](case, impl) for impl in IMPLS}
    for threads in threads_list:
        torch.set_num_threads(threads)
        fwd = time_pair({impl: calls[impl]["forward"] for impl in IMPLS}, repeat)
        both = time_pair({impl: calls[impl]["forward_backward"] for impl in IMPLS}, repeat)
        if with_memory:
            mem = {impl: peak_memory_mb(op, case, impl, threads) for impl in IMPLS}
        else:
            mem = {impl: float("nan") for impl in IMPLS}
        rows.append([
            label, threads,
            fwd["ours"] * 1e3, fwd["reference"] * 1e3, fwd["reference"] / fwd["ours"],
            both["ours"] * 1e3, both["reference"] * 1e3, both["reference"] / both["ours"],
            mem["ours"], mem["reference"],
        ])
    del calls
    return rows


COMPARE_HEADERS = ["size", "threads", "fwd ours ms", "fwd ref ms", "fwd x", "fwd+bwd ours ms",
                   "fwd+bwd ref ms", "fwd+bwd x", "peak ours MB", "peak ref MB"]


# ----------------------------------------------------------------------------------------------
# ms_deform_attn
# ----------------------------------------------------------------------------------------------
def _levels(height, width, strides=(8, 16, 32, 64)):
    """Feature-map sizes of a padded image at the backbone strides (ceil division, like a conv stem)."""
    return [(-(-height // s), -(-width // s)) for s in strides]


# name -> (label, image size, queries or None for "all positions" (encoder))
MSDA_CASES = {
    "enc512": ("encoder 512x512", (512, 512), None),
    "enc800": ("encoder 800x1333", (800, 1333), None),
    "dec300": ("decoder 300q 800x1333", (800, 1333), 300),
}
MSDA_SIZES = dict(batch=2, embed_dims=256, heads=8, points=4)


def _msda_locations(shapes_list, batch, queries, heads, points, encoder, generator):
    """Sampling locations distributed as in Deformable-DETR: each query samples around its own
    reference point (memory access is local, as in a real model, not uniformly random).

    Encoder: the reference point of a query is its own pixel centre; the p-th point of a head lies
    about p+1 pixels out in the head's direction (the layer's initialisation) plus 2 pixels of
    jitter, on every level. Decoder: a random box per query, points spread over the box.
    """
    levels = len(shapes_list)
    wh = torch.tensor([[w, h] for h, w in shapes_list], dtype=torch.float32)  # [L, 2]
    if encoder:
        refs = []
        for h, w in shapes_list:
            ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            refs.append(torch.stack([xs.flatten() / w, ys.flatten() / h], -1))
        refs = torch.cat(refs)[None, :, None, None, None, :]  # [1, Q, 1, 1, 1, 2]
        angles = torch.arange(heads) * (2 * torch.pi / heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        steps = torch.arange(1, points + 1, dtype=torch.float32)
        init = directions[:, None, None, :] * steps[None, None, :, None]  # [H, 1, P, 2] pixels
        jitter = 2.0 * torch.randn(batch, queries, heads, levels, points, 2, generator=generator)
        return (refs + (init + jitter) / wh[None, None, None, :, None, :]).contiguous()
    centres = torch.rand(batch, queries, 1, 1, 1, 2, generator=generator)
    sizes = 0.05 + 0.45 * torch.rand(batch, queries, 1, 1, 1, 2, generator=generator)
    spread = torch.rand(batch, queries, heads, levels, points, 2, generator=generator) - 0.5
    return (centres + spread * sizes).contiguous()


def msda_workload(case, impl):
    """Inputs of Deformable-DETR size and the forward / forward+backward callables of one impl."""
    from custom_ops.ms_deform_attn import ms_deform_attn_reference
    from custom_ops.ms_deform_attn.function import MSDeformAttnFunction

    _, (height, width), queries = MSDA_CASES[case]
    shapes_list = _levels(height, width)
    spatial_shapes = torch.tensor(shapes_list, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    spatial = int(sizes.sum())
    queries = spatial if queries is None else queries
    b, h, p = MSDA_SIZES["batch"], MSDA_SIZES["heads"], MSDA_SIZES["points"]
    d, levels = MSDA_SIZES["embed_dims"] // h, len(shapes_list)
    generator = torch.Generator().manual_seed(0)
    value = torch.randn(b, spatial, h, d, generator=generator)
    locations = _msda_locations(shapes_list, b, queries, h, p, encoder=MSDA_CASES[case][2] is None,
                                generator=generator)
    weights = torch.rand(b, queries, h, levels, p, generator=generator).softmax(-1)
    if impl == "ours":
        from custom_ops._extension import load_extension

        if load_extension("custom_ops.ms_deform_attn._C") is None:
            raise SystemExit("custom_ops.ms_deform_attn._C is not built: run `make ops`")
        op = MSDeformAttnFunction.apply
    else:
        op = ms_deform_attn_reference
    grad_out = torch.randn(b, queries, h * d, generator=generator)

    def forward():
        with torch.no_grad():
            return op(value, spatial_shapes, level_start_index, locations, weights)

    def forward_backward():
        leaves = [t.detach().requires_grad_(True) for t in (value, locations, weights)]
        out = op(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
        out.backward(grad_out)
        return [t.grad for t in leaves]

    return {"forward": forward, "forward_backward": forward_backward}


def bench_ms_deform_attn(args):
    rows = []
    for case in args.msda_cases:
        label = MSDA_CASES[case][0]
        rows += compare_rows("ms_deform_attn", case, label, args.threads, args.repeat, not args.no_memory)
    s = MSDA_SIZES
    print_table(f"ms_deform_attn (batch {s['batch']}, {s['embed_dims']} channels, {s['heads']} heads, 4 levels "
                f"(strides 8-64), {s['points']} points; float32; x = reference time / ours)", COMPARE_HEADERS, rows)
    return rows


# Workload factories by op name (the memory probe looks them up); bench functions by op name.
WORKLOADS = {"ms_deform_attn": msda_workload}
BENCHMARKS = {"ms_deform_attn": bench_ms_deform_attn}
from tools.benchmark_dcnv3 import bench_dcnv3, dcnv3_workload  # noqa: E402  (DCNv3 table)
WORKLOADS["dcnv3"] = dcnv3_workload
BENCHMARKS["dcnv3"] = lambda args: bench_dcnv3(args.threads, args.repeat, not args.no_memory)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Compiled ops vs pure-PyTorch references")
    parser.add_argument("--ops", nargs="*", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions per measurement (median)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--msda-cases", nargs="*", default=list(MSDA_CASES), choices=list(MSDA_CASES))
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: JSON [op, case, impl, threads]
    args = parser.parse_args(argv)

    if args.memory_probe:
        op, case, impl, threads = json.loads(args.memory_probe)
        print(f"{memory_probe(op, case, impl, threads):.1f}")
        return 0
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs visible; threads {args.threads}; "
          f"median of {args.repeat} after a warm-up")
    for op in args.ops:
        BENCHMARKS[op](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
