"""Checks run before a training run builds anything: one clear line per problem, no traceback.

A paper-size run fails late and expensively (after minutes of loading on every GPU) when the
strategy's package is not installed or the device cannot compute in the configured dtype; these
checks name the thing and the fix up front. Missing data files and pretrained directories are
checked by ``visionllm.datasets.checking.exit_if_inputs_missing``.
"""

import torch
from mmengine.config import Config

from .precision import (PrecisionError, check_device_dtype, default_device_type, dtype_name, pick_amp_dtype,
                        resolve_dtype, slow_bfloat16_warning)
from .strategies import strategy_package_missing


class PreflightError(ValueError):
    """A run that cannot start; the message is one line naming the problem and the fix."""


def configured_low_precision(cfg: Config) -> list:
    """The low-precision dtype names the config computes in: the frozen base, the FSDP
    mixed-precision policy and the autocast optimizer wrapper."""
    names = [cfg.model.get("frozen_dtype")]
    mixed = ((cfg.get("strategy") or {}).get("model_wrapper") or {}).get("mixed_precision") or {}
    names.append(mixed.get("param_dtype"))
    optim_wrapper = cfg.get("optim_wrapper") or {}
    if optim_wrapper.get("type") in ("AmpOptimWrapper", "AutocastOptimWrapper"):
        names.append(optim_wrapper.get("dtype"))
    return [name for name in names if name]


def check_precision(cfg: Config) -> None:
    device = default_device_type()
    try:
        for name in configured_low_precision(cfg):
            check_device_dtype(name, device)
    except PrecisionError as error:
        raise PreflightError(str(error)) from None


def precision_warning(cfg: Config, flags=None):
    """A one-line warning when the config computes in bfloat16 where that is emulated (a CPU
    without bfloat16 instructions), else None."""
    if not any(resolve_dtype(name) == torch.bfloat16 for name in configured_low_precision(cfg)):
        return None
    return slow_bfloat16_warning(default_device_type(), flags)


def check_run(cfg: Config) -> None:
    """Raise :class:`PreflightError` if the run described by ``cfg`` cannot start here."""
    missing = strategy_package_missing(cfg.get("strategy"))
    if missing:
        raise PreflightError(missing)
    check_precision(cfg)


def apply_amp(cfg: Config) -> str:
    """Switch ``cfg`` to automatic mixed precision in a dtype this machine computes in (bfloat16
    where supported, else float16 with loss scaling); returns a line saying what was chosen."""
    device = default_device_type()
    dtype = pick_amp_dtype(device)
    name = dtype_name(dtype)
    strategy = cfg.get("strategy") or {}
    kind = str(strategy.get("type", ""))
    if cfg.model.get("frozen_dtype"):
        cfg.model.frozen_dtype = name  # e.g. a bfloat16 base on a GPU that only has float16
    if "DeepSpeed" in kind:
        strategy.pop("bf16", None), strategy.pop("fp16", None)
        strategy[("bf16" if dtype == torch.bfloat16 else "fp16")] = dict(enabled=True)
        how = "DeepSpeed's own mixed precision"
    elif "FSDP" in kind:
        if dtype != torch.bfloat16:
            raise PreflightError("FSDP mixed precision needs bfloat16, which this GPU lacks: use the DDP "
                                 "config with --amp (float16 with loss scaling)")
        strategy.model_wrapper.mixed_precision = dict(param_dtype=name, reduce_dtype="float32", buffer_dtype="float32")
        how = "FSDP MixedPrecision (float32 shards, bfloat16 compute)"
    elif device == "cuda":
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.dtype = name
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
        how = "AmpOptimWrapper" + (" with dynamic loss scaling" if dtype == torch.float16 else "")
    else:
        cfg.optim_wrapper.type = "AutocastOptimWrapper"
        cfg.optim_wrapper.dtype = name
        how = "AutocastOptimWrapper (no loss scaling needed)"
    return f"--amp: autocast in {name} on {device} through {how}"
