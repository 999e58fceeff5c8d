"""Timing, peak memory and tables for benchmarking the compiled ops against their references.

The benchmark scripts (``tools/benchmark_ops.py``, ``tools/benchmark_dcnv3.py``) describe their
sizes as *workloads*: a function ``workload(case, impl, dtype)`` defined in an importable module
(``custom_ops.<op>.workloads``) that builds the inputs of one size and returns the zero-argument
callables ``{"forward": ..., "forward_backward": ...}`` of one implementation (``"ours"`` = the
compiled kernel, ``"reference"`` = the pure-PyTorch op). ``compare_rows`` times both side by side
(alternately, so machine load hits both alike) and ``print_table`` prints the rows.

Peak memory: torch has no CPU allocator statistics and ``tracemalloc`` does not see tensor
memory, so each (workload, size, implementation, dtype) runs once more in a fresh subprocess
(``python -m custom_ops.benchmarking --memory-probe ...``) that builds the inputs, resets the
kernel's resident-set high-water mark (``/proc/self/clear_refs``), runs one forward+backward and
reports ``VmHWM - VmRSS(before)``: the peak growth of resident memory caused by the call
(activations, workspaces, gradients). torch's CPU allocator returns large blocks to the OS on
free, so this is the real peak, not an allocator artefact.
"""
import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time

import torch

IMPLS = ("ours", "reference")
COMPARE_HEADERS = ["size", "dtype", "threads", "fwd ours ms", "fwd ref ms", "fwd x", "fwd+bwd ours ms",
                   "fwd+bwd ref ms", "fwd+bwd x", "peak ours MB", "peak ref MB"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def time_pair(make_calls, repeat):
    """Median wall time (s) of each implementation's callable, timed alternately after a warm-up.

    ``make_calls`` maps impl name -> zero-argument callable.
    """
    times = {name: [] for name in make_calls}
    for call in make_calls.values():  # warm-up: first-touch allocations, lazy init
        call()
    for _ in range(repeat):
        for name, call in make_calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _workload_path(workload):
    return f"{workload.__module__}:{workload.__qualname__}"


def _resolve(path):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(workload_path, case, impl, dtype_name, threads):
    """Runs in a fresh subprocess: peak RSS growth (MB) of one forward+backward."""
    torch.set_num_threads(threads)
    step = _resolve(workload_path)(case, impl, DTYPES[dtype_name])["forward_backward"]
    try:  # reset VmHWM to the current RSS so setup allocations do not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = _status_kb("VmRSS")
    step()
    return (_status_kb("VmHWM") - before) / 1024.0


def peak_memory_mb(workload, case, impl, dtype, threads):
    """Peak memory of one forward+backward, measured in a fresh Python process (see module doc)."""
    request = [_workload_path(workload), case, impl, dtype_label(dtype), threads]
    cmd = [sys.executable, "-m", "custom_ops.benchmarking", "--memory-probe", json.dumps(request)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return float("nan")
    return float(result.stdout.strip().splitlines()[-1])


def dtype_label(dtype):
    return str(dtype).removeprefix("torch.")


def compare_rows(workload, case, label, threads_list, repeat, with_memory, dtype=torch.float32):
    """Table rows (one per thread count) comparing ours with the reference on one size and dtype."""
    rows = []
    calls = {impl: workload(case, impl, dtype) for impl in IMPLS}
    for threads in threads_list:
        torch.set_num_threads(threads)
        fwd = time_pair({impl: calls[impl]["forward"] for impl in IMPLS}, repeat)
        both = time_pair({impl: calls[impl]["forward_backward"] for impl in IMPLS}, repeat)
        if with_memory:
            mem = {impl: peak_memory_mb(workload, case, impl, dtype, threads) for impl in IMPLS}
        else:
            mem = {impl: float("nan") for impl in IMPLS}
        rows.append([
            label, dtype_label(dtype), threads,
            fwd["ours"] * 1e3, fwd["reference"] * 1e3, fwd["reference"] / fwd["ours"],
            both["ours"] * 1e3, both["reference"] * 1e3, both["reference"] / both["ours"],
            mem["ours"], mem["reference"],
        ])
    del calls
    return rows


def compare_table(title, workload, cases, dtypes, threads_list, repeat, with_memory):
    """Rows for every (size, dtype) of ``cases`` ({case: label}), printed as one table and returned."""
    rows = []
    for case, label in cases.items():
        for dtype in dtypes:
            rows += compare_rows(workload, case, label, threads_list, repeat, with_memory, dtype)
    print_table(title, COMPARE_HEADERS, rows)
    return rows


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


def add_common_arguments(parser):
    """The options both benchmark scripts share."""
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions per measurement (median)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"], choices=list(DTYPES),
                        help="dtypes to time, ours and the reference at the same dtype (default %(default)s)")


def _main(argv=None):
    parser = argparse.ArgumentParser(description="internal: the peak-memory probe of the op benchmarks")
    parser.add_argument("--memory-probe", required=True, help="JSON [workload, case, impl, dtype, threads]")
    args = parser.parse_args(argv)
    print(f"{memory_probe(*json.loads(args.memory_probe)):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
