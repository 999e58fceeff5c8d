"""Speed of the embedded default model on CPU: latency per task, images/s, peak memory, and
training iterations/s; with ``--prompt-cache`` instead the time per image of the old path of
structured inference (the format generated in its own pass, then prompt and format read again by
the slot pass with dense attention, the category names encoded for every image) against the new
one (the prompt read once: the instruction's format verified as a draft in the slot pass; the
slot groups attend only to what they can see; a category set encoded once), side by side on the
same images, with how far their predictions differ.

    python tools/benchmark_inference.py [--threads 2] [--images 8] [--train-iters 10]
    python tools/benchmark_inference.py --prompt-cache [--images 8] [--repeats 3]

Needs the shapes data (tools/make_shapes.py) and the shipped checkpoint. Peak memory is the
process's maximum resident set size (it includes the ~0.6 GB of the dequantised LLM).
"""
import argparse
import json
import os.path as osp
import random
import resource
import time

import torch

from visionllm.apis.conversation import DEFAULT_SCORE_THRESHOLD

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

CONFIG = osp.join(REPO, "configs", "visionllm_tiny_shapes.py")
CHECKPOINT = osp.join(REPO, "checkpoints", "visionllm_tiny_shapes.pth")
DATA = osp.join(REPO, "data", "shapes")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def task_instructions(num_images: int):
    """The first ``num_images`` val image paths and one instruction per task."""
    from visionllm.tasks import build_instruction

    with open(osp.join(DATA, "annotations", "instances_val.json")) as handle:
        coco = json.load(handle)
    names = [c["name"] for c in coco["categories"]]
    paths = [osp.join(DATA, "images", "val", im["file_name"]) for im in coco["images"][:num_images]]
    rng = random.Random(0)
    return paths, {
        "detection": build_instruction("detection", rng, categories=names, template_index=0).text,
        "segmentation": build_instruction("segmentation", rng, categories=names, num_points=16, template_index=0).text,
        "grounding": build_instruction("grounding", rng, expression="the red circle", template_index=0).text,
        "caption": build_instruction("caption", rng, template_index=0).text,
        "vqa": build_instruction("vqa", rng, question="how many circles are there?", template_index=0).text,
    }


def bench_inference(num_images: int):
    from visionllm.apis.inferencer import VisionLLMInferencer

    paths, instructions = task_instructions(num_images)
    inferencer = VisionLLMInferencer(CONFIG, CHECKPOINT if osp.isfile(CHECKPOINT) else None)
    inferencer(paths[0], instructions["detection"])  # warm-up
    rows = [(task, *_timed(inferencer, paths, text)) for task, text in instructions.items()]
    grounding = inferencer.model.caption_grounding
    if grounding is not None:  # the same images' captions written by the LLM, side by side
        if grounding.compose:
            grounding.compose = False
            rows.append(("caption, LLM's (undetected kinds banned)", *_timed(inferencer, paths, instructions["caption"])))
            grounding.compose = True
        inferencer.model.caption_grounding = None
        rows.append(("caption, LLM's alone", *_timed(inferencer, paths, instructions["caption"])))
        inferencer.model.caption_grounding = grounding
    return rows


def _timed(inferencer, paths, text) -> tuple:
    """(ms per image at batch 1, images/s at batch 1, images/s with all paths in one batch)."""
    start = time.perf_counter()
    for path in paths:
        inferencer(path, text)
    single = (time.perf_counter() - start) / len(paths)
    start = time.perf_counter()
    inferencer(paths, text, batch_size=len(paths))
    batched = len(paths) / (time.perf_counter() - start)
    return single * 1000, 1.0 / single, batched


def _outputs(result, threshold: float) -> dict:
    """Labels, scores and boxes of a structured result scoring at least ``threshold`` (grounding:
    its one box), sorted by score; or the text."""
    if getattr(result, "text", None) is not None:
        return dict(text=result.text)
    scores = torch.as_tensor(result.scores, dtype=torch.float64)
    keep = torch.ones_like(scores, dtype=torch.bool) if result.task == "grounding" else scores >= threshold
    return dict(labels=torch.as_tensor(result.labels)[keep], scores=scores[keep],
                boxes=torch.as_tensor(result.boxes, dtype=torch.float64).reshape(-1, 4)[keep])


def _difference(old: dict, new: dict) -> tuple:
    """``(same labels or text, max |score difference|, max |box difference| in pixels)``."""
    if "text" in old:
        return old["text"] == new["text"], 0.0, 0.0
    if not torch.equal(old["labels"], new["labels"]):
        return False, float("inf"), float("inf")
    if not len(old["labels"]):
        return True, 0.0, 0.0
    return True, float((old["scores"] - new["scores"]).abs().max()), float((old["boxes"] - new["boxes"]).abs().max())


def bench_prompt_cache(num_images: int, repeats: int, threshold: float):
    """Rows ``(task, ms old, ms new, decoder ms old, decoder ms new, all labels equal, max score
    difference, max box difference)``:
    batch-1 time per image on the old path (the decoder's ``reuse_prompt_cache`` off: the
    format pass, then prompt, format and slots read again; PyTorch's dense attention; the names
    encoded per image, every slot decoded) and the new one (the prompt read once, slot-group
    attention, the names of a category set encoded once, only the slots scoring at least
    ``threshold`` decoded; the old path's predictions are compared above that threshold),
    alternating on every image (the best of ``repeats`` runs each), so both paths see the same
    images and the same machine load; and how far their predictions on those images differ."""
    from visionllm.apis.inferencer import VisionLLMInferencer
    from visionllm.models.llm.slot_group_attention import SLOT_GROUP_ATTENTION

    paths, instructions = task_instructions(num_images)
    inferencer = VisionLLMInferencer(CONFIG, CHECKPOINT if osp.isfile(CHECKPOINT) else None)
    decoder, tokenizer = inferencer.model.task_decoder, inferencer.model.image_tokenizer
    llm_config = decoder.backbone.config

    def use_path(new: bool) -> None:
        decoder.reuse_prompt_cache = new
        llm_config._attn_implementation = SLOT_GROUP_ATTENTION if new else "sdpa"
        if not new:
            tokenizer._names_memo = None  # the old path encoded the names for every image
    predict, decoder_time = decoder.predict, [0.0]

    def timed_predict(*args, **kwargs):  # the task decoder's share (the LLM and what follows it)
        start = time.perf_counter()
        result = predict(*args, **kwargs)
        decoder_time[0] = time.perf_counter() - start
        return result

    decoder.predict = timed_predict
    inferencer(paths[0], instructions["detection"])  # warm-up
    rows = []
    for task in ("detection", "segmentation", "grounding", "caption"):
        totals, decoding = {False: 0.0, True: 0.0}, {False: 0.0, True: 0.0}
        same, score_diff, box_diff = True, 0.0, 0.0
        for path in paths:
            outputs = {}
            for reuse in (False, True):
                best, best_decoder = float("inf"), float("inf")
                for _ in range(repeats):
                    use_path(reuse)
                    start = time.perf_counter()
                    result = inferencer(path, instructions[task], score_threshold=threshold if reuse else None)
                    best = min(best, time.perf_counter() - start)
                    best_decoder = min(best_decoder, decoder_time[0])
                totals[reuse] += best
                decoding[reuse] += best_decoder
                outputs[reuse] = _outputs(result, threshold)
            equal, scores, boxes = _difference(outputs[False], outputs[True])
            same, score_diff, box_diff = same and equal, max(score_diff, scores), max(box_diff, boxes)
        per_image = [value / len(paths) * 1000
                     for value in (totals[False], totals[True], decoding[False], decoding[True])]
        rows.append((task, *per_image, same, score_diff, box_diff))
    use_path(True)
    del decoder.predict
    return rows


def bench_training(iters: int) -> float:
    from visionllm.apis.runner import build_runner, load_config

    cfg = load_config(CONFIG, [f"train_cfg.max_iters={iters}", "default_hooks.checkpoint.interval=100000",
                               "param_scheduler=[]", "default_hooks.logger.interval=1000",
                               "log_level=WARNING"],  # the table, not the runner's config dump
                      work_dir=osp.join(REPO, "work_dirs", "benchmark_train"))
    runner = build_runner(cfg)
    times = []
    from mmengine.hooks import Hook

    class Timer(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.start = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            times.append(time.perf_counter() - self.start)

    runner.register_hook(Timer(), priority="LOWEST")
    runner.train()
    steady = times[2:] or times  # the first iterations warm up allocators and caches
    return len(steady) / sum(steady)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--train-iters", type=int, default=10)
    parser.add_argument("--prompt-cache", action="store_true",
                        help="compare the old and new path of structured inference")
    parser.add_argument("--repeats", type=int, default=3, help="runs per image and setting (--prompt-cache)")
    parser.add_argument("--score-threshold", type=float, default=DEFAULT_SCORE_THRESHOLD,
                        help="the new path's score_threshold (--prompt-cache; default: that of the "
                             "command line, the server and the web page)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.prompt_cache:
        rows = bench_prompt_cache(args.images, args.repeats, args.score_threshold)
        print(f"\nstructured inference, old path (prompt read twice, dense attention, names encoded per image) vs "
              f"new (prompt read once, slot-group attention, a category set encoded once, slots scoring "
              f">= {args.score_threshold} decoded), embedded default "
              f"model, CPU, {args.threads} threads, {args.images} val images, batch 1, "
              f"best of {args.repeats} per image")
        print("| task | old (ms / image) | new (ms / image) | new / old | decoder old / new (ms) | decoder new / old "
              "| same labels (text) | max score diff | max box diff (px) |")
        print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
        for task, old, new, decoder_old, decoder_new, same, scores, boxes in rows:
            print(f"| {task} | {old:.0f} | {new:.0f} | {new / old:.2f} | {decoder_old:.0f} / {decoder_new:.0f} "
                  f"| {decoder_new / decoder_old:.2f} | {'yes' if same else 'NO'} | {scores:.1e} | {boxes:.1e} |")
        return
    rows = bench_inference(args.images)
    print(f"\nembedded default model (configs/visionllm_tiny_shapes.py), CPU, {args.threads} threads, "
          f"{args.images} val images")
    print(f"| task | latency per image (ms, batch 1) | images/s (batch 1) | images/s (batch {args.images}) |")
    print("|---|---:|---:|---:|")
    for task, latency, ips, batched in rows:
        print(f"| {task} | {latency:.0f} | {ips:.2f} | {batched:.2f} |")
    print(f"\npeak memory (max RSS) after inference: {peak_rss_mb():.0f} MB")
    if args.train_iters > 0:
        its = bench_training(args.train_iters)
        print(f"training: {its:.2f} iterations/s (batch 2, steady state), peak memory {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
