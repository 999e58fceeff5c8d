"""Benchmark of the compiled ops against their pure-PyTorch references, per dtype.

For each op, size and dtype: forward and forward+backward wall time of ours (compiled kernel) and
of the reference at the same dtype, side by side in one run (timed alternately, so machine load
hits both alike), with 1 and 2 threads, plus the peak memory of one forward+backward (see
``custom_ops.benchmarking``). For float16 / bfloat16 both implementations compute in float32: the
kernels convert on load, the reference casts its inputs up and its output back.

    python tools/benchmark_ops.py                       # every op, every size, float32 + bfloat16
    python tools/benchmark_ops.py --ops ms_deform_attn --threads 2 --repeat 3 --dtypes bfloat16 float16
"""
import argparse
import os
import sys

import torch

from custom_ops import benchmarking
from custom_ops.dcnv3 import workloads as dcnv3_workloads
from custom_ops.ms_deform_attn import workloads as msda_workloads


def bench_ms_deform_attn(args):
    s = msda_workloads.SIZES
    title = (f"ms_deform_attn (batch {s['batch']}, {s['embed_dims']} channels, {s['heads']} heads, 4 levels "
             f"(strides 8-64), {s['points']} points; x = reference time / ours)")
    cases = {case: msda_workloads.CASES[case][0] for case in args.msda_cases}
    return benchmarking.compare_table(title, msda_workloads.workload, cases, args.dtypes, args.threads, args.repeat,
                                      not args.no_memory)


def bench_dcnv3(args):
    title = (f"dcnv3 (InternImage-T at 224x224, batch {dcnv3_workloads.batch_size()}, kernel {dcnv3_workloads.KERNEL}; "
             "x = reference time / ours)")
    cases = {case: dcnv3_workloads.CASES[case][0] for case in args.dcnv3_cases}
    return benchmarking.compare_table(title, dcnv3_workloads.workload, cases, args.dtypes, args.threads, args.repeat,
                                      not args.no_memory)


BENCHMARKS = {"ms_deform_attn": bench_ms_deform_attn, "dcnv3": bench_dcnv3}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Compiled ops vs pure-PyTorch references")
    parser.add_argument("--ops", nargs="*", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    parser.add_argument("--msda-cases", nargs="*", default=list(msda_workloads.CASES),
                        choices=list(msda_workloads.CASES))
    parser.add_argument("--dcnv3-cases", nargs="*", default=list(dcnv3_workloads.CASES),
                        choices=list(dcnv3_workloads.CASES))
    benchmarking.add_common_arguments(parser)
    args = parser.parse_args(argv)
    args.dtypes = [benchmarking.DTYPES[name] for name in args.dtypes]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs visible; threads {args.threads}; "
          f"median of {args.repeat} after a warm-up")
    for op in args.ops:
        BENCHMARKS[op](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
