"""Train a VisionLLM model from an mmengine config.

    python tools/train.py configs/visionllm_tiny_shapes.py --work-dir work_dirs/tiny
    python tools/train.py CONFIG --resume            # continue from the latest checkpoint
    python tools/train.py CONFIG --cfg-options train_cfg.max_iters=50 randomness.seed=1
    python tools/train.py CONFIG --amp               # autocast in bfloat16 (float16 on older GPUs)
Multi-GPU: tools/dist_train.sh CONFIG NUM_GPUS (docs/multi_gpu.md).
"""
import argparse
import os

from visionllm.apis.runner import build_runner, load_config
from visionllm.datasets.checking import exit_if_inputs_missing
from visionllm.engine.preflight import PreflightError, apply_amp, check_run, precision_warning


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a VisionLLM model")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="directory for logs and checkpoints")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="resume from the latest checkpoint in the work dir, or from the given path")
    parser.add_argument("--amp", action="store_true",
                        help="automatic mixed precision: bfloat16 where the device supports it (CPUs, GPUs of "
                             "compute capability 8.0+), else float16 with loss scaling")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config entries, e.g. train_cfg.max_iters=100")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, work_dir=args.work_dir, launcher=args.launcher)
    try:
        if args.amp:
            print(apply_amp(cfg))
        check_run(cfg)
        warning = precision_warning(cfg)
        if warning:
            print(warning)
    except PreflightError as error:
        raise SystemExit(f"error: {error}")
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    exit_if_inputs_missing(cfg)
    runner = build_runner(cfg)
    runner.train()


if __name__ == "__main__":
    main()
