"""Seconds per training iteration of a config under several training modes, side by side.

Modes (``--modes``, the first is the reference of the last column):

- ``mixed``: the config as it is (batches mixing the tasks);
- ``grouped``: batches of one task each (``TaskGroupedBatchSampler``) from the same sample
  stream; a mixed batch pays for its most expensive sample (one polygon sample makes the whole
  batch decode polygon slots);
- ``fused-adamw``: the config's optimizer with ``fused=True`` (one kernel over all tensors);
- ``amp``: ``tools/train.py --amp`` (autocast in bfloat16 where the device has it);
- ``ddp``: ``--procs`` processes of data-parallel training (``tools/dist_train.sh CONFIG N``;
  gloo on the CPU) with the batch split among them (the same samples per step) and the threads
  too (``--threads`` divided by ``--procs``, at least one each): on a machine whose cores a
  single process uses poorly, processes can beat threads. The time is rank 0's, which includes
  waiting for the others at each step's gradient exchange.

Every mode runs the config's training for ``--iters`` iterations from the same seed, so they see
(nearly) the same samples; the table gives the mean and median time of the iterations after
``--warmup`` and the share of batches holding a segmentation sample. The modes alternate
``--repeats`` times so that a drift in the machine's speed hits all of them.

    .venv/bin/python tools/benchmark_training.py configs/visionllm_tiny_shapes_onerun.py [--iters 60]
        [--warmup 10] [--repeats 1] [--threads 2] [--procs 2] [--modes mixed grouped fused-adamw amp ddp]

The backbone pretraining stage and checkpoints are left out of the timed runs (they are the
same in every mode).
"""
import argparse
import copy
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from mmengine.hooks import Hook

from visionllm.apis.runner import build_runner, load_config, per_process_batch_size, world_size

SKIPPED_HOOKS = ("ShapeKindPretrainingHook", "TrainableStateCheckpointHook")


class _IterationTimer(Hook):
    """Records each training iteration's wall time and the tasks of its batch."""

    def __init__(self):
        self.records = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        seconds = time.perf_counter() - self._start
        tasks = [sample.task for sample in data_batch["data_samples"]]
        if torch.distributed.is_initialized():  # the step's batch is every rank's
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, tasks)
            tasks = [task for rank_tasks in gathered for task in rank_tasks]
        self.records.append((seconds, tasks))


def _grouped(cfg):
    cfg.train_dataloader.batch_sampler = dict(type="TaskGroupedBatchSampler")


def _fused_adamw(cfg):
    cfg.optim_wrapper.optimizer.fused = True


def _amp(cfg):
    from visionllm.engine.preflight import apply_amp
    apply_amp(cfg)


MODES = {"mixed": ("mixed (the config's)", None),
         "grouped": ("one task each (TaskGroupedBatchSampler)", _grouped),
         "fused-adamw": ("fused AdamW", _fused_adamw),
         "amp": ("--amp (bfloat16 autocast)", _amp),
         "ddp": ("{procs} processes (DDP)", None)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_distributed(config, procs, threads, iters, work_dir):
    """The ``ddp`` mode: this script relaunched under torchrun, one worker per process."""
    out = os.path.join(work_dir, "records.json")
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, threads // procs)))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
                    "--master_addr=127.0.0.1", f"--master_port={_free_port()}", os.path.abspath(__file__), config,
                    "--iters", str(iters), "--ddp-worker", out], env=env, check=True)
    with open(out) as f:
        return [(seconds, tasks) for seconds, tasks in json.load(f)]


def ddp_worker(config, iters, out):
    cfg = load_config(config, launcher="pytorch")
    cfg.train_dataloader.batch_size = per_process_batch_size(cfg.train_dataloader.batch_size, world_size("pytorch"))
    records = run(cfg, "mixed", iters, os.path.dirname(out))
    if int(os.environ["RANK"]) == 0:
        with open(out, "w") as f:
            json.dump(records, f)
    # Leave together: a rank that exits while another still holds the gloo pairs can abort it.
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def run(base_cfg, mode, iters, work_dir):
    cfg = copy.deepcopy(base_cfg)
    cfg.work_dir = work_dir
    cfg.train_cfg.max_iters = iters
    cfg.custom_hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") not in SKIPPED_HOOKS]
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=iters + 1, save_last=False)
    cfg.param_scheduler = None  # the warmup's tiny rates would make the first iterations unlike the rest
    change = MODES[mode][1]
    if change is not None:
        change(cfg)
    runner = build_runner(cfg)
    timer = _IterationTimer()
    runner.register_hook(timer, priority="LOWEST")
    runner.train()
    return timer.records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="first iterations left out of the mean")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--procs", type=int, default=2, help="processes of the ddp mode")
    parser.add_argument("--modes", nargs="+", default=["mixed", "grouped"], choices=list(MODES),
                        help="training modes to time (default: mixed grouped)")
    parser.add_argument("--ddp-worker", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args.config, args.iters, args.ddp_worker)
    if args.iters <= args.warmup:
        raise SystemExit("error: --iters must exceed --warmup")
    if args.procs < 2:
        raise SystemExit("error: --procs must be at least 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config(args.config)
    batch_size = base.train_dataloader.batch_size
    if "ddp" in args.modes:
        per_process_batch_size(batch_size, args.procs)  # a batch that does not split fails before any run
    times = {mode: [] for mode in args.modes}
    seg_share = {mode: [] for mode in args.modes}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode in args.modes:
                work_dir = f"{tmp}/{mode}_{repeat}"
                if mode == "ddp":
                    os.makedirs(work_dir)
                    records = run_distributed(args.config, args.procs, torch.get_num_threads(), args.iters, work_dir)
                else:
                    records = run(base, mode, args.iters, work_dir)
                records = records[args.warmup:]
                times[mode] += [seconds for seconds, _ in records]
                seg_share[mode] += [("segmentation" in tasks) for _, tasks in records]
    reference = statistics.mean(times[args.modes[0]])
    print(f"\n{args.config}: batch {batch_size}, {torch.get_num_threads()} threads, iterations "
          f"{args.warmup + 1}-{args.iters} of {args.repeats} run(s) per mode\n")
    print(f"| mode | s/iter | median | s/sample | batches with a segmentation sample | time vs {args.modes[0]} |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in args.modes:
        mean = statistics.mean(times[mode])
        share = 100 * sum(seg_share[mode]) / len(seg_share[mode])
        print(f"| {MODES[mode][0].format(procs=args.procs)} | {mean:.3f} | {statistics.median(times[mode]):.3f} | {mean / batch_size:.3f} | "
              f"{share:.0f} % | {mean / reference:.2f} |")


if __name__ == "__main__":
    main()
