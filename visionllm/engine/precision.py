"""Mixed precision: which low-precision dtype a device serves, and an autocast optimizer wrapper.

mmengine's ``AmpOptimWrapper`` (autocast + gradient scaling) is limited to accelerators; on a CPU
the same training step runs under ``torch.autocast('cpu', bfloat16)`` through
:class:`AutocastOptimWrapper`, which needs no loss scaling (bfloat16 has float32's exponent range).
"""
from contextlib import contextmanager
from typing import Optional

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

LOW_PRECISION = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


class PrecisionError(ValueError):
    """A dtype the device cannot serve, or a name that is no low-precision dtype."""


def resolve_dtype(dtype) -> torch.dtype:
    """``'bfloat16'`` / ``'bf16'`` / ``'float16'`` / ``'fp16'`` / a ``torch.dtype`` → the
    low-precision ``torch.dtype``."""
    if isinstance(dtype, torch.dtype) and dtype in LOW_PRECISION.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in LOW_PRECISION:
        return LOW_PRECISION[dtype.lower()]
    raise PrecisionError(f"unknown low-precision dtype {dtype!r}; use 'bfloat16' or 'float16'")


def default_device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device_dtype(dtype, device_type: Optional[str] = None) -> torch.dtype:
    """The dtype if ``device_type`` computes in it, else a one-line :class:`PrecisionError`."""
    dtype = resolve_dtype(dtype)
    device_type = device_type or default_device_type()
    if device_type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        major, minor = torch.cuda.get_device_capability()
        raise PrecisionError(f"this GPU (compute capability {major}.{minor}) has no bfloat16; "
                             "use float16 (with loss scaling) or a GPU of compute capability 8.0+")
    return dtype


def cpu_flags(path: str = "/proc/cpuinfo") -> Optional[set]:
    """The instruction-set flags of this CPU (Linux), or None where they cannot be read."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def slow_bfloat16_warning(device_type: Optional[str] = None, flags: Optional[set] = None) -> Optional[str]:
    """A one-line warning when bfloat16 would run on a CPU without bfloat16 instructions
    (AVX512-BF16 or AMX), where PyTorch emulates it: convolutions and matrix products then take
    tens of times longer than in float32. None on GPUs, capable CPUs and unknown CPUs."""
    device_type = device_type or default_device_type()
    flags = cpu_flags() if flags is None else flags
    if device_type != "cpu" or flags is None or flags & {"avx512_bf16", "amx_bf16"}:
        return None
    return ("warning: this CPU has no bfloat16 instructions (avx512_bf16 / amx_bf16), so bfloat16 is "
            "emulated and runs much slower than float32; for CPU runs set model.frozen_dtype=None "
            "and leave out --amp")


def pick_amp_dtype(device_type: Optional[str] = None) -> torch.dtype:
    """bfloat16 where the device supports it (CPUs, GPUs of compute capability 8.0+), else
    float16 (older GPUs)."""
    device_type = device_type or default_device_type()
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward context is ``torch.autocast(device_type, dtype)``.

    For bfloat16 on any device (no gradient scaling needed) and for CPUs, where mmengine's
    ``AmpOptimWrapper`` refuses to run. Parameters, gradients and optimizer state stay in their
    own dtype (float32 master weights); only the forward's matmuls and convolutions run in
    ``dtype``.
    """

    def __init__(self, *args, dtype="bfloat16", device_type: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.device_type = device_type or default_device_type()
        self.cast_dtype = check_device_dtype(dtype, self.device_type)
        if self.cast_dtype == torch.float16 and self.device_type == "cuda":
            raise PrecisionError("float16 on a GPU needs loss scaling: use AmpOptimWrapper "
                                 "(tools/train.py --amp picks it)")

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast(self.device_type, dtype=self.cast_dtype):
            yield
