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
        pos_y = sine_features(y, self.num_feats, self.temperature)
        pos_x = sine_features(x, self.num_feats, self.temperature)
        return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2)


def sine_features(coords: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """``[...]`` scaled coordinates → ``[..., num_feats]``: sin on even, cos on odd frequencies."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    angles = coords[..., None].float() / dim_t
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_point_features(points: torch.Tensor, num_feats: int, temperature: float) -> torch.Tensor:
    """``[..., D]`` coordinates in [0, 1] (a point, a box) → ``[..., D * num_feats]`` sine
    features of each coordinate over one turn."""
    scaled = points * 2 * math.pi
    return torch.cat([sine_features(scaled[..., i], num_feats, temperature) for i in range(points.shape[-1])], -1)


class PointPositionEmbedding(nn.Module):
    """Where a token sits, as features: sine features of its (cx, cy) in [0, 1] through a linear
    map that starts at zero (adding it to trained tokens changes nothing until it is trained).

    Deformable-DETR's decoder moves each token's reference point but its content vector never
    receives that position explicitly; "the shape on the left" or "is it at the bottom?" need it.
    """

    def __init__(self, embed_dims: int, num_feats: int = 32, temperature: float = 20.0):
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.proj = nn.Linear(2 * num_feats, embed_dims)

    def init_weights(self) -> None:
        """The map starts at zero: trained tokens are unchanged until it learns."""
        if not self.proj.weight.is_meta:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points ``[..., 2]`` (cx, cy) in [0, 1] → ``[..., embed_dims]``."""
        feats = sine_point_features(points, self.num_feats, self.temperature)
        return self.proj(feats.to(self.proj.weight.dtype))
