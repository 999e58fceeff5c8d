"""Benchmark of the DCNv3 op (compiled kernel vs the grid_sample reference) at InternImage-T sizes.

A 224x224 image gives stage maps of 56/28/14/7 pixels (strides 4/8/16/32) with 64/128/256/512
channels in 4/8/16/32 groups, kernel 3. Timing, memory probe and table come from
``tools/benchmark_ops.py`` (which also calls ``bench_dcnv3`` from its own ``main``).

    python tools/benchmark_dcnv3.py [--threads 1 2] [--repeat 3] [--batch 8] [--no-memory]
"""
import argparse
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# name -> (label, map size, channels, groups) of InternImage-T at a 224x224 input
DCNV3_CASES = {
    "stage1": ("T stage1 56x56 C64 G4", 56, 64, 4),
    "stage2": ("T stage2 28x28 C128 G8", 28, 128, 8),
    "stage3": ("T stage3 14x14 C256 G16", 14, 256, 16),
    "stage4": ("T stage4 7x7 C512 G32", 7, 512, 32),
}
DCNV3_BATCH = int(os.environ.get("DCNV3_BENCH_BATCH", "8"))
KERNEL = 3


def dcnv3_workload(case, impl):
    """Inputs of one stage and the forward / forward+backward callables of one implementation."""
    from custom_ops.dcnv3 import DCNv3Function, dcnv3_reference

    _, size, channels, group = DCNV3_CASES[case]
    batch, points = DCNV3_BATCH, KERNEL * KERNEL
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, size, size, channels, generator=generator)
    # offsets of a few pixels, as a trained InternImage predicts; masks softmaxed per group
    offset = (torch.rand(batch, size, size, group * points * 2, generator=generator) * 2 - 1) * 2.0
    mask = torch.randn(batch, size, size, group, points, generator=generator).softmax(-1)
    mask = mask.reshape(batch, size, size, group * points)
    if impl == "ours":
        from custom_ops._extension import load_extension

        if load_extension("custom_ops.dcnv3._C") is None:
            raise SystemExit("custom_ops.dcnv3._C is not built: run `make ops`")
        op = DCNv3Function.apply
    else:
        op = dcnv3_reference
    geometry = (KERNEL, KERNEL, 1, 1, 1, 1, 1, 1, group, channels // group, 1.0)
    grad_out = torch.randn(batch, size, size, channels, generator=generator)

    def forward():
        with torch.no_grad():
            return op(x, offset, mask, *geometry)

    def forward_backward():
        leaves = [t.detach().requires_grad_(True) for t in (x, offset, mask)]
        op(*leaves, *geometry).backward(grad_out)
        return [t.grad for t in leaves]

    return {"forward": forward, "forward_backward": forward_backward}


def bench_dcnv3(threads_list, repeat=3, with_memory=True, cases=None):
    """Rows [size, threads, fwd ours/ref ms, x, fwd+bwd ours/ref ms, x, peak ours/ref MB]; prints them."""
    from tools import benchmark_ops

    # the memory probe re-runs benchmark_ops.py in a subprocess and looks the workload up there
    benchmark_ops.WORKLOADS.setdefault("dcnv3", dcnv3_workload)
    rows = []
    for case in cases or list(DCNV3_CASES):
        rows += benchmark_ops.compare_rows("dcnv3", case, DCNV3_CASES[case][0], threads_list, repeat, with_memory)
    benchmark_ops.print_table(f"dcnv3 (InternImage-T at 224x224, batch {DCNV3_BATCH}, kernel {KERNEL}; float32; "
                              "x = reference time / ours)", benchmark_ops.COMPARE_HEADERS, rows)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description="DCNv3: compiled kernel vs grid_sample reference")
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--cases", nargs="*", default=list(DCNV3_CASES), choices=list(DCNV3_CASES))
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs visible; threads {args.threads}; "
          f"median of {args.repeat} after a warm-up")
    bench_dcnv3(args.threads, args.repeat, not args.no_memory, args.cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
