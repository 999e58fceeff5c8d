"""Optional parts of the architecture, configured as registry components (``dict(type=...)`` or None)."""
from typing import Dict, Optional

from torch import nn

from visionllm.registry import MODELS


def build_optional(cfg: Optional[Dict], **default_args) -> Optional[nn.Module]:
    """The module of ``cfg = dict(type=..., ...)`` from visionllm's ``MODELS`` registry, with
    ``default_args`` filling what the host module knows (widths, levels); None when ``cfg`` is
    None (the part is left out). A config that is not such a dict, or names an unregistered
    type, is one clear error."""
    if cfg is None:
        return None
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ValueError(f"an optional model part is configured as dict(type=...) or None, got {cfg!r}")
    if MODELS.get(cfg["type"]) is None:
        raise KeyError(f"unknown model component type {cfg['type']!r} (not registered in visionllm's MODELS)")
    return MODELS.build(dict(cfg), default_args=default_args)
