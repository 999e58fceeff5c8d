"""Per-image forward time and peak memory of the image tokenizer on CPU, compiled ops vs reference ops.

Each measurement runs in its own subprocess so that the peak resident memory (``ru_maxrss``) of one
configuration does not hide another's. The op backend is switched with the ops' own switch
(``VISIONLLM_OPS_BACKEND``, see docs/interfaces.md).

    .venv/bin/python tools/benchmark_tokenizer.py                    # full table (slow: minutes)
    .venv/bin/python tools/benchmark_tokenizer.py --backbones resnet50 --sizes 512 --repeats 1
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = {"512": (512, 512), "800x1333": (800, 1333)}
BACKBONES = {
    "resnet50": dict(type="ResNetBackbone", depth=50),
    "internimage_t": dict(type="InternImageBackbone", variant="T"),
}
INSTRUCTION = ('Detect every object of the categories {"person": <c0>, "car": <c1>, "dog": <c2>, "cat": <c3>, '
               '"chair": <c4>, "bottle": <c5>, "cup": <c6>, "bus": <c7>} in <image>. '
               "Answer as a list of (c, x1, y1, x2, y2).")


def tokenizer_config(backbone: str) -> dict:
    """Paper-size tokenizer (256 wide, 6 + 6 layers, 100 tokens) with the embedded MiniLM text encoder."""
    return dict(type="ImageTokenizer", embed_dims=256, backbone=BACKBONES[backbone], text_encoder=dict(),
                fusion=dict(num_heads=8),
                transformer=dict(num_heads=8, num_points=4, ffn_dims=1024, num_encoder_layers=6,
                                 num_decoder_layers=6, num_queries=100, iterative_refinement=True))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def measure_one(backbone: str, size: str, backend: str, repeats: int, threads: int) -> dict:
    """Build the tokenizer and time ``repeats`` forwards after one warm-up (run in a child process)."""
    import torch

    import custom_ops
    from visionllm.registry import MODELS
    import visionllm.models.image_tokenizer  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
    custom_ops.set_backend(backend)
    torch.manual_seed(0)
    model = MODELS.build(tokenizer_config(backbone)).eval()
    h, w = SIZES[size]
    image = torch.randn(1, 3, h, w)
    with torch.no_grad():
        model(image, None, [INSTRUCTION])  # warm-up (allocator, oneDNN primitives)
        rss_before = _rss_mb()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(image, None, [INSTRUCTION])
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return dict(backbone=backbone, size=size, backend=backend, seconds=min(times), mean_seconds=sum(times) / len(times),
                peak_rss_mb=peak, forward_peak_mb=max(peak - rss_before, 0.0), threads=torch.get_num_threads())


def run_child(backbone, size, backend, repeats, threads) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", backbone, size, backend,
           "--repeats", str(repeats), "--threads", str(threads)]
    env = dict(os.environ, VISIONLLM_OPS_BACKEND=backend)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child failed for {backbone} {size} {backend}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per setting (min is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--child", nargs=3, metavar=("BACKBONE", "SIZE", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_one(*args.child, repeats=args.repeats, threads=args.threads)))
        return

    rows = []
    header = (f"| tokenizer | image | ours (s) | reference (s) | speed-up | ours peak RSS (MB) | "
              f"reference peak RSS (MB) | ours fwd +MB | reference fwd +MB |")
    print(header)
    print("|" + "---|" * 9)
    for backbone in args.backbones:
        for size in args.sizes:
            ours = run_child(backbone, size, "compiled", args.repeats, args.threads)
            ref = run_child(backbone, size, "reference", args.repeats, args.threads)
            rows += [ours, ref]
            print(f"| {backbone} | {size} | {ours['seconds']:.2f} | {ref['seconds']:.2f} | "
                  f"{ref['seconds'] / ours['seconds']:.2f}x | {ours['peak_rss_mb']:.0f} | {ref['peak_rss_mb']:.0f} | "
                  f"{ours['forward_peak_mb']:.0f} | {ref['forward_peak_mb']:.0f} |", flush=True)
    print(f"(batch 1, forward only, no_grad; min of {args.repeats} after one warm-up; "
          f"torch threads {rows[0]['threads'] if rows else '?'}; 'fwd +MB' = peak RSS during the forwards "
          f"above the RSS before them)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
