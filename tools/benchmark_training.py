"""Seconds per training iteration with mixed-task batches vs one task per batch.

A mixed batch pays for its most expensive sample (one polygon sample makes the whole batch decode
polygon slots); ``TaskGroupedBatchSampler`` forms batches of one task each from the same sample
stream. Both modes run the config's training for ``--iters`` iterations from the same seed, so
they see (nearly) the same samples, grouped differently; the table gives the mean time of the
iterations after ``--warmup`` and the share of batches holding a segmentation sample. The
modes alternate ``--repeats`` times so that a drift in the machine's speed hits both.

    .venv/bin/python tools/benchmark_training.py configs/visionllm_tiny_shapes_onerun.py [--iters 60]
        [--warmup 10] [--repeats 1] [--threads 2]

The backbone pretraining stage and checkpoints are left out of the timed runs (they are the
same in both modes).
"""
import argparse
import copy
import statistics
import tempfile
import time

import torch
from mmengine.hooks import Hook

from visionllm.apis.runner import build_runner, load_config

SKIPPED_HOOKS = ("ShapeKindPretrainingHook", "TrainableStateCheckpointHook")


class _IterationTimer(Hook):
    """Records each training iteration's wall time and the tasks of its batch."""

    def __init__(self):
        self.records = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        tasks = [sample.task for sample in data_batch["data_samples"]]
        self.records.append((time.perf_counter() - self._start, tasks))


def run(base_cfg, grouped, iters, work_dir):
    cfg = copy.deepcopy(base_cfg)
    cfg.work_dir = work_dir
    cfg.train_cfg.max_iters = iters
    cfg.custom_hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") not in SKIPPED_HOOKS]
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=iters + 1, save_last=False)
    cfg.param_scheduler = None  # the warmup's tiny rates would make the first iterations unlike the rest
    if grouped:
        cfg.train_dataloader.batch_sampler = dict(type="TaskGroupedBatchSampler")
    runner = build_runner(cfg)
    timer = _IterationTimer()
    runner.register_hook(timer, priority="LOWEST")
    runner.train()
    return timer.records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="first iterations left out of the mean")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.iters <= args.warmup:
        raise SystemExit("error: --iters must exceed --warmup")
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config(args.config)
    batch_size = base.train_dataloader.batch_size
    times = {False: [], True: []}
    seg_share = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for grouped in (False, True):
                records = run(base, grouped, args.iters, f"{tmp}/{int(grouped)}_{repeat}")[args.warmup:]
                times[grouped] += [seconds for seconds, _ in records]
                seg_share[grouped] += [("segmentation" in tasks) for _, tasks in records]
    mixed = statistics.mean(times[False])
    print(f"\n{args.config}: batch {batch_size}, {torch.get_num_threads()} threads, iterations "
          f"{args.warmup + 1}-{args.iters} of {args.repeats} run(s) per mode\n")
    print("| batches | s/iter | s/sample | batches with a segmentation sample | time vs mixed |")
    print("|---|---:|---:|---:|---:|")
    for grouped, name in ((False, "mixed (the config's)"), (True, "one task each (TaskGroupedBatchSampler)")):
        mean = statistics.mean(times[grouped])
        share = 100 * sum(seg_share[grouped]) / len(seg_share[grouped])
        print(f"| {name} | {mean:.3f} | {mean / batch_size:.3f} | {share:.0f} % | {mean / mixed:.2f} |")


if __name__ == "__main__":
    main()
