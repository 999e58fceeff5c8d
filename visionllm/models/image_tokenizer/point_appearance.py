"""What the image looks like where a token sits: its pixels, as features of the token.

Deep backbone levels trained to tell objects apart by kind tend to lose colour, while captions,
answers and referring expressions name colours all the time (docs/experiments.md has the probe
measurements). ``PointAppearanceEmbedding`` samples the input image on a
small grid around each token's reference point and maps those pixels to the token width with a
linear map that starts at zero (trained tokens are unchanged until it learns).
"""
import torch
import torch.nn.functional as F
from torch import nn

from visionllm.registry import MODELS


@MODELS.register_module()
class PointAppearanceEmbedding(nn.Module):
    """Args:
        embed_dims: token width.
        grid: samples per side of the square grid around each point.
        radius: half-side of the grid, as a fraction of the image's valid width / height.
    """

    def __init__(self, embed_dims: int, in_channels: int = 3, grid: int = 3, radius: float = 0.025):
        super().__init__()
        steps = torch.linspace(-radius, radius, grid) if grid > 1 else torch.zeros(1)
        dy, dx = torch.meshgrid(steps, steps, indexing="ij")
        self.register_buffer("offsets", torch.stack([dx.flatten(), dy.flatten()], -1), persistent=False)
        self.proj = nn.Linear(in_channels * grid * grid, embed_dims)

    def init_weights(self) -> None:
        """The map starts at zero: trained tokens are unchanged until it learns."""
        if not self.proj.weight.is_meta:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def sample(self, images: torch.Tensor, image_masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, M, S, channels]`` at the ``S`` grid points around each of ``points
        [B, M, 2]`` ((cx, cy) in [0, 1] of each image's valid area; ``image_masks [B, H, W]``
        True = padding). Bilinear, zero outside the image."""
        height, width = images.shape[-2:]
        valid_w = (~image_masks[:, 0, :]).sum(1).to(points.dtype)
        valid_h = (~image_masks[:, :, 0]).sum(1).to(points.dtype)
        # [0, 1] of the valid area → grid_sample's [-1, 1] over the padded tensor (pixel centres
        # at (i + 0.5) / size, i.e. align_corners=False).
        scale = torch.stack([valid_w / width, valid_h / height], -1)[:, None, None]
        where = (points[:, :, None] + self.offsets.to(points.dtype)) * scale * 2 - 1
        pixels = F.grid_sample(images.to(points.dtype), where, mode="bilinear", padding_mode="zeros",
                               align_corners=False)  # [B, channels, M, S]
        return pixels.permute(0, 2, 3, 1)

    def forward(self, images: torch.Tensor, image_masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        pixels = self.sample(images, image_masks, points)
        return self.proj(pixels.flatten(2).to(self.proj.weight.dtype))
