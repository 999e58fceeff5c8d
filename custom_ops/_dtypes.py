"""The floating dtypes the ops serve, and how their inputs are brought to one dtype.

Every op computes in float32 for float16 / bfloat16 inputs (float64 stays float64) and returns
results in the inputs' dtype. Its floating inputs must share one dtype, with one exception that
mirrors torch's own autocast "promote" policy (``torch.cat``, ``addcmul``, ...): under
``torch.autocast`` for the inputs' device, inputs of different floating dtypes are cast to the
widest of them. So a module that feeds a float32 tensor next to an autocast bfloat16 one runs the
op in float32 rather than failing.
"""
import contextlib

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_ACCEPTED = "torch.float16, torch.bfloat16, torch.float32 or torch.float64"


def common_float_inputs(op, **tensors):
    """Check the named floating inputs of ``op`` and return them (in the given order) in one dtype.

    Raises ``TypeError`` naming the op, the argument and its dtype for a dtype outside
    ``SUPPORTED_DTYPES``, and for inputs of different dtypes outside autocast.
    """
    names = list(tensors)
    for name, tensor in tensors.items():
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{op}: {name} has dtype {tensor.dtype}; expected {_ACCEPTED}")
    first = tensors[names[0]]
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) == 1:
        return tuple(tensors.values())
    if not _autocast_on(first.device.type):
        other = next(n for n in names if tensors[n].dtype != first.dtype)
        raise TypeError(f"{op}: {other} has dtype {tensors[other].dtype} but {names[0]} has {first.dtype}; "
                        f"{', '.join(names)} must share one dtype (outside torch.autocast)")
    widest = first.dtype
    for dtype in dtypes:
        widest = torch.promote_types(widest, dtype)
    return tuple(t.to(widest) for t in tensors.values())


def compute_dtype(dtype):
    """The dtype the ops compute in for inputs of ``dtype``: float32 for the 16-bit types."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _autocast_on(device_type):
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def autocast_disabled(device):
    """Context in which autocast cannot change the dtype of ops on ``device`` (references use it)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
