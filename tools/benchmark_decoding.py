"""Latency of output-format-as-query (parallel) decoding vs token-by-token decoding.

For detection with N = 10, 50, 100 slots on the embedded SmolLM2-135M decoder (prompt of about
200 positions including M = 100 image tokens), both modes decode the SAME structured output
(N groups x 5 fields: class + box) with a KV cache for the autoregressive baseline; the table
reports seconds per image and the speed-up. Outputs of the two modes are compared as a check.

    .venv/bin/python tools/benchmark_decoding.py [--slots 10 50 100] [--layers K] [--repeats 2] [--threads T]

On a machine shared with other jobs use ``--threads 1``: with oversubscribed cores the many small
kernels of token-by-token decoding slow down badly at 2 threads (OpenMP barriers wait for
descheduled threads), which would exaggerate the speed-up.
"""
import argparse
import time

import torch

from visionllm.instructions import format_category_set
from visionllm.models.llm.task_decoder import LLMTaskDecoder

CATEGORIES = ["person", "bicycle", "car", "dog", "cat", "horse", "bird", "bottle", "chair", "cup"]
FIELDS = ("cls", "x1", "y1", "x2", "y2")


def decode(decoder, prefix, image_embeds, mode):
    _, hidden = decoder._run_groups(prefix, decoder._group_embeds(image_embeds, FIELDS), mode)
    logits = decoder._field_logits(hidden[0], len(CATEGORIES))
    return logits.cls, logits.loc


def timed(fn, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--image-tokens", type=int, default=100)
    parser.add_argument("--layers", type=int, default=None, help="keep only the first k layers")
    parser.add_argument("--repeats", type=int, default=2, help="best of n for the parallel pass")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # The decoder alone: no image tokenizer, so no memory for the refinements to read.
    decoder = LLMTaskDecoder(llm=dict(source="smollm2", num_layers=args.layers), generate_format=False,
                             box_refinement=None, polygon_refinement=None).eval()
    instruction = (f"Detect every object of the categories {format_category_set(CATEGORIES)} in <image>. "
                   f"Answer as a list of (c, x1, y1, x2, y2).")
    image_embeds = torch.randn(1, args.image_tokens, decoder.hidden_size) * 0.05
    with torch.no_grad():
        prefix = decoder._structured_prefix(image_embeds, [instruction], FIELDS)
    print(f"SmolLM2-135M ({len(decoder.backbone.layers)} layers), prompt + format = "
          f"{prefix.embeds.shape[1]} positions, {torch.get_num_threads()} threads", flush=True)
    rows = []
    for num_slots in args.slots:
        decoder.num_slots = num_slots
        with torch.no_grad():
            decode(decoder, prefix, image_embeds, "parallel")  # warm-up
            t_par, (cls_p, loc_p) = timed(lambda: decode(decoder, prefix, image_embeds, "parallel"), args.repeats)
            t_ar, (cls_a, loc_a) = timed(lambda: decode(decoder, prefix, image_embeds, "autoregressive"), 1)
        diff = max((cls_p - cls_a).abs().max().item(), (loc_p - loc_a).abs().max().item())
        same = bool((cls_p.argmax(-1) == cls_a.argmax(-1)).all() and (loc_p.argmax(-1) == loc_a.argmax(-1)).all())
        rows.append((num_slots, num_slots * len(FIELDS), t_par, t_ar, t_ar / t_par, same, diff))
        print(f"N={num_slots}: parallel {t_par:.3f} s, autoregressive {t_ar:.2f} s", flush=True)
    print("\n| slots N | output tokens | parallel (s) | autoregressive (s) | speed-up | same argmax | max logit diff |")
    print("|---:|---:|---:|---:|---:|:---:|---:|")
    for n, tokens, t_par, t_ar, ratio, same, diff in rows:
        print(f"| {n} | {tokens} | {t_par:.3f} | {t_ar:.2f} | {ratio:.1f}x | {'yes' if same else 'NO'} | {diff:.1e} |")


if __name__ == "__main__":
    main()
