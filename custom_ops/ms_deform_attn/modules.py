"""``MSDeformAttn``: the multi-scale deformable attention layer of Deformable-DETR."""
import math

import torch
from torch import nn
from torch.nn import functional as F

from .function import ms_deform_attn

try:  # registered for configs; the op package itself also works without the toolkit
    from visionllm.registry import MODELS
except ImportError:  # pragma: no cover - only when custom_ops is used on its own
    MODELS = None


class MSDeformAttn(nn.Module):
    """Each query attends to ``num_points`` sampled positions per head and level around its
    reference point; offsets and attention weights are predicted from the query.

    Attribute names follow Deformable-DETR (``sampling_offsets``, ``attention_weights``,
    ``value_proj``, ``output_proj``) so its checkpoints load 1:1. ``dropout`` is applied to the
    output projection (0 by default; the residual connection belongs to the calling layer).
    """

    def __init__(self, embed_dims=256, num_levels=4, num_heads=8, num_points=4, dropout=0.0):
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f"embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})")
        self.embed_dims = embed_dims
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self):
        """Deformable-DETR initialisation: offsets start on a ring of directions (one per head),
        the k-th point k steps out; attention starts uniform; projections Xavier."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float64) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        # Scale so the larger component is 1: the first point lands on a neighbouring pixel.
        directions = directions / directions.abs().max(-1, keepdim=True).values
        steps = torch.arange(1, self.num_points + 1, dtype=torch.float64)
        grid = directions[:, None, None, :] * steps[None, None, :, None]  # [H, 1, P, 2]
        grid = grid.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1).to(self.sampling_offsets.bias.dtype))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query, reference_points, value, spatial_shapes, level_start_index, key_padding_mask=None):
        """query [B, Q, C]; reference_points [B, Q, L, 2] (cx, cy) or [B, Q, L, 4] (cx, cy, w, h)
        in [0, 1]; value [B, S, C]; spatial_shapes [L, 2] long (H, W); level_start_index [L];
        key_padding_mask [B, S] bool, True = padding (those values are zeroed) -> [B, Q, C]."""
        batch, queries, _ = query.shape
        _, spatial, _ = value.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        if spatial_shapes.shape != (levels, 2):
            raise ValueError(f"spatial_shapes must be [{levels}, 2], got {tuple(spatial_shapes.shape)}")
        if int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum()) != spatial:
            raise ValueError(f"value has {spatial} positions but spatial_shapes {spatial_shapes.tolist()} "
                             f"sum to {int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())}")

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(batch, spatial, heads, self.embed_dims // heads)

        offsets = self.sampling_offsets(query).view(batch, queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, queries, heads, levels * points)
        weights = F.softmax(weights, -1).view(batch, queries, heads, levels, points)

        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: normalise by that level's (W, H).
            normalizer = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1).to(offsets.dtype)
            locations = (reference_points[:, :, None, :, None, :]
                         + offsets / normalizer[None, None, None, :, None, :])
        elif reference_points.shape[-1] == 4:
            # Offsets are relative to the box: up to half its size away for the farthest point.
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f"reference_points must end in 2 or 4 values, got {tuple(reference_points.shape)}")

        output = ms_deform_attn(value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
                                locations.contiguous(), weights.contiguous())
        return self.dropout(self.output_proj(output))


if MODELS is not None:
    MODELS.register_module(module=MSDeformAttn)
