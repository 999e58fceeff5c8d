"""Per-image forward time and peak memory of the image tokenizer on CPU, compiled ops vs reference ops.

One subprocess per (tokenizer, image size) builds the model once and alternates the two op backends
(``custom_ops.set_backend``, see docs/interfaces.md) round by round, so that the load of a shared
machine drifts over both alike; the minimum time per backend is reported. Peak memory is the
highest resident set size sampled (every 2 ms) during that backend's forwards, above the resident
size before them.

    .venv/bin/python tools/benchmark_tokenizer.py                    # full table (slow: minutes)
    .venv/bin/python tools/benchmark_tokenizer.py --backbones resnet50 --sizes 512 --repeats 1
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

SIZES = {"512": (512, 512), "800x1333": (800, 1333)}
BACKBONES = {
    "resnet50": dict(type="ResNetBackbone", depth=50),
    "internimage_t": dict(type="InternImageBackbone", variant="T"),
}
BACKENDS = ("compiled", "reference")
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


class PeakRSS:
    """Highest resident set size seen by a sampling thread while the block runs (torch ops release the GIL)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0.0

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def measure(backbone: str, size: str, repeats: int, threads: int) -> list:
    """Build the tokenizer once; warm up and time both backends alternately (run in a child process)."""
    import torch

    import custom_ops
    from visionllm.registry import MODELS
    import visionllm.models.image_tokenizer  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = MODELS.build(tokenizer_config(backbone)).eval()
    h, w = SIZES[size]
    image = torch.randn(1, 3, h, w)
    stats = {b: dict(times=[], peak_mb=0.0, base_mb=0.0) for b in BACKENDS}
    try:
        with torch.no_grad():
            for backend in BACKENDS:  # warm-up (allocator, oneDNN primitives, extension loading)
                custom_ops.set_backend(backend)
                model(image, None, [INSTRUCTION])
            for _ in range(repeats):
                for backend in BACKENDS:
                    custom_ops.set_backend(backend)
                    base = _rss_mb()
                    with PeakRSS() as peak:
                        start = time.perf_counter()
                        model(image, None, [INSTRUCTION])
                        stats[backend]["times"].append(time.perf_counter() - start)
                    if peak.peak - base > stats[backend]["peak_mb"] - stats[backend]["base_mb"]:
                        stats[backend].update(peak_mb=peak.peak, base_mb=base)
    finally:
        custom_ops.set_backend(None)
    return [dict(backbone=backbone, size=size, backend=b, seconds=min(s["times"]),
                 mean_seconds=sum(s["times"]) / len(s["times"]), peak_rss_mb=s["peak_mb"],
                 forward_peak_mb=s["peak_mb"] - s["base_mb"], threads=torch.get_num_threads())
            for b, s in stats.items()]


def run_child(backbone, size, repeats, threads, attempts: int = 2) -> list:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", backbone, size,
           "--repeats", str(repeats), "--threads", str(threads)]
    for attempt in range(attempts):
        result = subprocess.run(cmd, capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if result.returncode == 0:
            return json.loads(result.stdout.strip().splitlines()[-1])
        # a negative code is a signal (e.g. an op extension rebuilt in place under a running child)
        print(f"benchmark child for {backbone} {size} exited with {result.returncode} "
              f"(attempt {attempt + 1} of {attempts})", file=sys.stderr)
    raise RuntimeError(f"benchmark child failed for {backbone} {size}:\n{result.stderr[-3000:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per backend (min is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--child", nargs=2, metavar=("BACKBONE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, repeats=args.repeats, threads=args.threads)))
        return

    rows = []
    print("| tokenizer | image | ours (s) | reference (s) | speed-up | ours forward peak (MB) | "
          "reference forward peak (MB) | process peak RSS (MB) |")
    print("|" + "---|" * 8)
    for backbone in args.backbones:
        for size in args.sizes:
            ours, ref = run_child(backbone, size, args.repeats, args.threads)
            rows += [ours, ref]
            print(f"| {backbone} | {size} | {ours['seconds']:.2f} | {ref['seconds']:.2f} | "
                  f"{ref['seconds'] / ours['seconds']:.2f}x | {ours['forward_peak_mb']:.0f} | "
                  f"{ref['forward_peak_mb']:.0f} | {max(ours['peak_rss_mb'], ref['peak_rss_mb']):.0f} |", flush=True)
    print(f"(batch 1, forward only, no_grad, paper-size tokenizer with MiniLM; min of {args.repeats} alternating "
          f"rounds after a warm-up; torch threads {rows[0]['threads'] if rows else '?'}; 'forward peak' = highest "
          f"RSS during the forward above the RSS before it)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
