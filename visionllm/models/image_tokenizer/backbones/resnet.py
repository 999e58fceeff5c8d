"""ResNet backbone (through timm) with Deformable-DETR style multi-level projection."""
from typing import List, Optional, Sequence

import timm
import torch
from torch import nn

from visionllm.registry import MODELS

from .utils import LevelProjection, freeze_module, freeze_norm_layers, load_local_checkpoint

# timm feature indices of the ResNet stages: 1..4 = layer1..layer4 (strides 4, 8, 16, 32).
_STAGE_MODULES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))


@MODELS.register_module()
class ResNetBackbone(nn.Module):
    """ResNet-18/50/... features at strides 8/16/32 plus extra stride-64 level(s).

    Args:
        depth: 18, 34, 50 or 101 (timm model ``resnet{depth}``).
        embed_dims: width of every output level.
        out_indices: timm feature indices used (2, 3, 4 = strides 8, 16, 32).
        num_extra_levels: number of extra stride-2 levels after the last one.
        checkpoint: optional local path of a ResNet state dict (timm / torchvision key names).
        frozen_stages: -1 trains everything; 0 freezes the stem; k also freezes layer1..layerk.
        norm_eval: keep all BatchNorm layers in eval mode with frozen affine parameters.
        freeze: freeze the whole ResNet (the projection layers stay trainable unless
            ``freeze_projection``).
        zero_init_last: timm's initialisation of each block's last norm to zero (a fresh block
            starts as identity); irrelevant once a checkpoint is loaded.
    """

    def __init__(self, depth: int = 50, embed_dims: int = 256, out_indices: Sequence[int] = (2, 3, 4),
                 num_extra_levels: int = 1, checkpoint: Optional[str] = None, frozen_stages: int = -1,
                 norm_eval: bool = False, freeze: bool = False, freeze_projection: bool = False,
                 zero_init_last: bool = True):
        super().__init__()
        self.body = timm.create_model(f"resnet{depth}", pretrained=False, features_only=True,
                                      out_indices=tuple(out_indices), zero_init_last=zero_init_last)
        self.in_channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction()) + [
            self.body.feature_info.reduction()[-1] * 2 ** (i + 1) for i in range(num_extra_levels)]
        self.projection = LevelProjection(self.in_channels, embed_dims, num_extra_levels)
        self.embed_dims = embed_dims
        self.num_levels = len(self.strides)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.freeze = freeze
        self.freeze_projection = freeze_projection
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        self._freeze()

    def load_checkpoint(self, path: str, prefix: Optional[str] = None):
        """Load ResNet weights from a local file; returns (missing, unexpected) keys."""
        return load_local_checkpoint(self.body, path, prefix=prefix)

    def _frozen_modules(self) -> List[nn.Module]:
        if self.freeze:
            modules = [self.body]
        else:
            names = [n for stage in _STAGE_MODULES[:self.frozen_stages + 1] for n in stage]
            modules = [getattr(self.body, n) for n in names if hasattr(self.body, n)]
        if self.freeze_projection:
            modules.append(self.projection)
        return modules

    def _freeze(self):
        for module in self._frozen_modules():
            freeze_module(module)
        if self.norm_eval:
            freeze_norm_layers(self.body)

    def train(self, mode: bool = True):
        # Frozen parts and norm_eval layers stay in eval mode whatever the runner asks.
        super().train(mode)
        if mode:
            self._freeze()
        return self

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """images ``[B, 3, H, W]`` → list of ``[B, embed_dims, H_l, W_l]``, strides ``self.strides``."""
        return self.projection(self.body(images))
