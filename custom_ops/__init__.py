"""Compiled operators of the VisionLLM toolkit: multi-scale deformable attention and DCNv3.

Each op is a small package: a C++ CPU kernel and a CUDA kernel sharing their per-element math,
a pure-PyTorch reference (test oracle and fallback), an autograd function and a module.
"""

import os

_BACKENDS = ("compiled", "reference")
_backend_override = None


def set_backend(name):
    """Force every op to its ``'compiled'`` kernel (default) or its ``'reference'`` implementation.

    ``None`` restores the default, which the environment variable ``VISIONLLM_OPS_BACKEND`` can
    also set; benchmarks use this to time whole models on the reference ops.
    """
    global _backend_override
    if name is not None and name not in _BACKENDS:
        raise ValueError(f"unknown ops backend {name!r}; expected one of {_BACKENDS}")
    _backend_override = name


def get_backend() -> str:
    name = _backend_override or os.environ.get("VISIONLLM_OPS_BACKEND", "compiled")
    if name not in _BACKENDS:
        raise ValueError(f"VISIONLLM_OPS_BACKEND={name!r}; expected one of {_BACKENDS}")
    return name
