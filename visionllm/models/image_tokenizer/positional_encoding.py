"""Sine positional encoding of a padded feature map (DETR / Deformable-DETR)."""
import math

import torch
from torch import nn


class SinePositionalEncoding(nn.Module):
    """Encode (y, x) of every valid position as sines and cosines of ``num_feats`` frequencies each.

    Coordinates are normalised by the valid (unpadded) extent of each image, so an image has the
    same encoding alone or padded inside a batch.
    """

    def __init__(self, num_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi,
                 offset: float = -0.5, eps: float = 1e-6):
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.scale = scale
        self.offset = offset
        self.eps = eps

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """mask ``[B, H, W]`` bool (True = padding) → ``[B, 2 * num_feats, H, W]``."""
        not_mask = (~mask).to(torch.float32)
        y = not_mask.cumsum(1)
        x = not_mask.cumsum(2)
        y = (y + self.offset) / (y[:, -1:, :] + self.eps) * self.scale
        x = (x + self.offset) / (x[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_feats)
        pos_x = x[..., None] / dim_t
        pos_y = y[..., None] / dim_t
        # interleave sin on even and cos on odd frequencies
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
