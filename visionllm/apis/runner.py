"""Config loading and Runner construction shared by tools/train.py and tools/test.py."""
import argparse
import os
import os.path as osp
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner


def load_config(path: str, cfg_options: Sequence[str] = (), work_dir: Optional[str] = None,
                launcher: str = "none") -> Config:
    """Read a config, apply ``KEY=VALUE`` overrides and fill the run settings."""
    if not osp.isfile(path):
        raise SystemExit(f"error: config file not found: {path}")
    cfg = Config.fromfile(path)
    if cfg_options:
        parsed = argparse.Namespace()
        DictAction(option_strings=[], dest="cfg_options")(None, parsed, list(cfg_options))
        cfg.merge_from_dict(parsed.cfg_options)
    cfg.launcher = launcher
    if cfg.get("total_batch_size") is not None:
        if any(option.split("=", 1)[0] == "train_dataloader.batch_size" for option in cfg_options):
            raise SystemExit("error: this config sets total_batch_size (samples per step over all processes); "
                             "override that instead of train_dataloader.batch_size")
        cfg.train_dataloader.batch_size = per_process_batch_size(cfg.total_batch_size, world_size(launcher))
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("work_dirs", osp.splitext(osp.basename(path))[0])
    if launcher != "none" and not torch.cuda.is_available():
        # CPU-only distributed runs need gloo; nccl is the mmengine default.
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
        # DDP of a CPU module takes no device ids (mmengine's default passes the local rank).
        cfg.setdefault("model_wrapper_cfg", dict(type="MMDistributedDataParallel", broadcast_buffers=False,
                                                 find_unused_parameters=cfg.get("find_unused_parameters", True)))
        cfg.model_wrapper_cfg.setdefault("device_ids", None)
    cfg.setdefault("default_scope", "visionllm")
    return cfg


def world_size(launcher: str) -> int:
    """The number of training processes a launcher starts, from the environment it sets."""
    variables = dict(none=None, pytorch="WORLD_SIZE", slurm="SLURM_NTASKS", mpi="OMPI_COMM_WORLD_SIZE")
    if launcher not in variables:
        raise SystemExit(f"error: unknown launcher {launcher!r}")
    if variables[launcher] is None:
        return 1
    value = os.environ.get(variables[launcher])
    if value is None:
        raise SystemExit(f"error: launcher {launcher} but {variables[launcher]} is not set; start the run with "
                         "tools/dist_train.sh (torchrun) or srun")
    return int(value)


def per_process_batch_size(total: int, processes: int) -> int:
    """Each process's share of ``total`` samples per step. mmengine's samplers give rank ``r``
    every ``processes``-th index of one permutation from index ``r``, so the shares of one step
    are together the ``total`` indices a single process would batch: 1 or N processes train on
    the same samples at every step."""
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
        raise SystemExit(f"error: total_batch_size must be a positive integer, got {total!r}")
    if total % processes:
        raise SystemExit(f"error: total_batch_size {total} does not split among {processes} processes")
    return total // processes


def build_runner(cfg: Config) -> Runner:
    import visionllm.engine  # noqa: F401  registers the atomic checkpoint backend and hooks

    if cfg.get("launcher", "none") == "pytorch" and not torch.cuda.is_available():
        # mmengine's pytorch launcher always calls torch.cuda.set_device, which fails on a CPU
        # machine; a process group that already exists is used as it is.
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")

    from visionllm.engine.console import concise_console

    # The runner renders the config as text for its log, the work dir's copy and every checkpoint;
    # mmengine lays that text out with yapf, about 2 s a time for a config of this size. The plain
    # layout is the same Python (it reloads to the same config) in ~0.05 s. (Config.fromfile's
    # format_python_code does not reach configs read without lazy imports, so it is set here.)
    object.__setattr__(cfg, "_format_python_code", False)
    runner_cls = Runner
    if "runner_type" in cfg:
        from mmengine.registry import RUNNERS

        runner_cls = cfg.runner_type if isinstance(cfg.runner_type, type) else RUNNERS.get(cfg.runner_type)
        if runner_cls is None:
            raise SystemExit(f"error: unknown runner_type {cfg.runner_type!r}")
    return concise_console(runner_cls).from_cfg(cfg)
