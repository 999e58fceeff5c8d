"""Benchmark of the DCNv3 op alone (compiled kernel vs the grid_sample reference) at InternImage-T
sizes, per dtype; the same table as ``tools/benchmark_ops.py --ops dcnv3`` (workloads in
``custom_ops.dcnv3.workloads``, timing and memory in ``custom_ops.benchmarking``).

    python tools/benchmark_dcnv3.py [--threads 1 2] [--repeat 3] [--batch 8] [--no-memory] [--dtypes float32 bfloat16]
"""
import argparse
import os
import sys

import torch

from custom_ops import benchmarking
from custom_ops.dcnv3 import workloads


def main(argv=None):
    parser = argparse.ArgumentParser(description="DCNv3: compiled kernel vs grid_sample reference")
    parser.add_argument("--cases", nargs="*", default=list(workloads.CASES), choices=list(workloads.CASES))
    parser.add_argument("--batch", type=int, default=workloads.batch_size(), help="images per call")
    benchmarking.add_common_arguments(parser)
    args = parser.parse_args(argv)
    os.environ["DCNV3_BENCH_BATCH"] = str(args.batch)  # the memory-probe subprocesses inherit it
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs visible; threads {args.threads}; "
          f"median of {args.repeat} after a warm-up")
    title = (f"dcnv3 (InternImage-T at 224x224, batch {args.batch}, kernel {workloads.KERNEL}; "
             "x = reference time / ours)")
    benchmarking.compare_table(title, workloads.workload, {c: workloads.CASES[c][0] for c in args.cases},
                               [benchmarking.DTYPES[name] for name in args.dtypes], args.threads, args.repeat,
                               not args.no_memory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
