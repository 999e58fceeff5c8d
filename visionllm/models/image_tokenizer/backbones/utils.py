"""Helpers shared by the backbones: extra-level projection, freezing, local checkpoints."""
import logging
import math
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


class LevelProjection(nn.Module):
    """Map backbone levels to the transformer width, plus extra coarser levels.

    As in Deformable-DETR: each backbone level gets a 1x1 conv + GroupNorm(32); each extra level
    is a 3x3 stride-2 conv + GroupNorm, the first one applied to the raw last backbone level and
    the next ones to the previous extra level.
    """

    def __init__(self, in_channels: Sequence[int], embed_dims: int, num_extra_levels: int = 1,
                 num_groups: int = 32):
        super().__init__()
        # 32 groups at the usual widths; at tiny widths keep >= 4 channels per group so that a
        # 1x1 map (coarsest level of a small image) still has several values to normalise
        groups = math.gcd(num_groups, max(embed_dims // 4, 1))
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, embed_dims, kernel_size=1), nn.GroupNorm(groups, embed_dims))
            for c in in_channels)
        extra_in = [in_channels[-1]] + [embed_dims] * (num_extra_levels - 1)
        self.extra_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, embed_dims, kernel_size=3, stride=2, padding=1),
                          nn.GroupNorm(groups, embed_dims))
            for c in extra_in[:num_extra_levels])
        self.reset_parameters()

    def reset_parameters(self):
        for seq in list(self.input_proj) + list(self.extra_proj):
            if seq[0].weight.is_meta:
                continue
            nn.init.xavier_uniform_(seq[0].weight, gain=1)
            nn.init.zeros_(seq[0].bias)

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        outs = [proj(feat) for proj, feat in zip(self.input_proj, features)]
        last = features[-1]
        for proj in self.extra_proj:
            last = proj(last)
            outs.append(last)
        return outs


def freeze_module(module: nn.Module) -> None:
    """Stop training a module: no gradients and eval mode (dropout / batch statistics off)."""
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)


def norm_layers(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, _NORM_TYPES)]


def freeze_norm_layers(module: nn.Module) -> None:
    """``norm_eval``: norm layers keep their (pretrained) statistics and affine parameters."""
    for norm in norm_layers(module):
        freeze_module(norm)


def load_local_checkpoint(module: nn.Module, path: str, prefix: Optional[str] = None,
                          strip_prefixes: Sequence[str] = ("module.",)) -> Tuple[List[str], List[str]]:
    """Load a local checkpoint into ``module`` non-strictly and report what did not fit.

    Accepts plain state dicts and ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers. When
    ``prefix`` is given only the keys under it are used (e.g. ``'backbone.'`` of a detector).

    Returns:
        ``(missing_keys, unexpected_keys)``, also printed to the mmengine logger.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and wrapper in checkpoint and isinstance(checkpoint[wrapper], dict):
            checkpoint = checkpoint[wrapper]
            break
    state = {}
    for key, value in checkpoint.items():
        for strip in strip_prefixes:
            if key.startswith(strip):
                key = key[len(strip):]
        if prefix is not None:
            if not key.startswith(prefix):
                continue
            key = key[len(prefix):]
        state[key] = value
    result = module.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    print_log(f"loaded {path} into {type(module).__name__}: {len(state) - len(unexpected)} tensors; "
              f"missing keys: {missing or 'none'}; unexpected keys: {unexpected or 'none'}",
              logger="current", level=logging.WARNING if (missing or unexpected) else logging.INFO)
    return missing, unexpected
