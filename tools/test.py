"""Evaluate a VisionLLM checkpoint on every task of a config's test set.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR] [--show-dir DIR]
                         [--cfg-options KEY=VALUE ...]

Each task metric prints its own table. ``--out DIR`` writes the standard result files:
``DIR/<task>.bbox.json`` / ``.segm.json`` (COCO results), ``DIR/<task>.refexp.json``,
``DIR/<task>.caption.json`` ([{image_id, caption}]) and ``DIR/<task>.vqa.json``
([{question_id, answer}]). ``--show-dir DIR`` draws the predictions on the images.
"""
import argparse
import os
import os.path as osp
import sys

from visionllm.engine import load_trained_checkpoint, unwrapped_model
from visionllm.apis.inputs import InputError
from visionllm.apis.runner import build_runner, load_config
from visionllm.datasets.checking import exit_if_inputs_missing
from visionllm.engine.preflight import precision_warning


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Evaluate a VisionLLM model")
    parser.add_argument("config", help="config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="directory for logs")
    parser.add_argument("--out", help="directory for the standard result json files")
    parser.add_argument("--show-dir", help="directory for pictures of the predictions")
    parser.add_argument("--score-thr", type=float, default=0.3, help="score threshold of the pictures")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config entries, e.g. test_dataloader.batch_size=2")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def set_outfile_prefix(evaluator, out_dir: str):
    """Point every metric of the test evaluator at ``out_dir`` (task-named files)."""
    if isinstance(evaluator, list):
        metrics = evaluator
    elif evaluator.get("type", "Evaluator") == "Evaluator" and "metrics" in evaluator:
        metrics = evaluator["metrics"] if isinstance(evaluator["metrics"], list) else [evaluator["metrics"]]
    else:
        metrics = [evaluator]
    for metric in metrics:
        if metric.get("type") == "MultiTaskMetric":
            for task, sub in metric["task_metrics"].items():
                sub["outfile_prefix"] = osp.join(out_dir, task)
        else:
            metric["outfile_prefix"] = osp.join(out_dir, metric.get("task") or metric["type"])
    return evaluator


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        sys.exit(f"error: checkpoint not found: {args.checkpoint}")
    cfg = load_config(args.config, args.cfg_options, work_dir=args.work_dir, launcher=args.launcher)
    # Loaded below instead of through cfg.load_from: mmengine would list every frozen pretrained
    # key the checkpoint leaves out by design, and would accept a checkpoint of another model.
    cfg.load_from = None
    # Testing needs neither the training nor the validation parts (mmengine wants each group
    # complete or absent, and building them would read the training data).
    for key in ("train_dataloader", "train_cfg", "optim_wrapper", "param_scheduler",
                "val_dataloader", "val_cfg", "val_evaluator"):
        cfg[key] = None
    if not cfg.get("test_cfg"):
        cfg.test_cfg = dict(type="TestLoop")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        cfg.test_evaluator = set_outfile_prefix(cfg.test_evaluator, args.out)
    if args.show_dir:
        cfg.custom_hooks = list(cfg.get("custom_hooks", [])) + [
            dict(type="VisionLLMVisualizationHook", show_dir=args.show_dir, score_thr=args.score_thr)]
    warning = precision_warning(cfg)
    if warning:
        print(warning)
    exit_if_inputs_missing(cfg)
    runner = build_runner(cfg)
    try:
        load_trained_checkpoint(unwrapped_model(runner.model), args.checkpoint)
    except InputError as error:
        sys.exit(f"error: {error}")
    return runner.test()


if __name__ == "__main__":
    main()
