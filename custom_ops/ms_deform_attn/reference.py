"""Pure-PyTorch multi-scale deformable attention built on ``grid_sample``.

It is the test oracle of the compiled kernels and the fallback when they are not built. Semantics
(shared by every implementation): bilinear sampling with zero padding and ``align_corners=False``;
a location (x, y) in [0, 1] is taken over the padded feature map of its level, so pixel centres
sit at ((i + 0.5) / W, (j + 0.5) / H).

Precision follows the compiled kernels: float16 / bfloat16 inputs are computed in float32 and the
result is rounded to the input dtype once; autocast is switched off inside so it cannot change
that (CPU autocast would otherwise pick grid_sample's dtype itself).
"""
import torch
import torch.nn.functional as F

from .._dtypes import autocast_disabled, compute_dtype


def ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """value [B, S, H, D], spatial_shapes [L, 2] (H, W), level_start_index [L],
    sampling_locations [B, Q, H, L, P, 2] (x, y), attention_weights [B, Q, H, L, P] -> [B, Q, H*D].

    ``level_start_index`` is implied by ``spatial_shapes`` (levels are concatenated in order) and
    kept in the signature for parity with the compiled op.
    """
    out_dtype = value.dtype
    work = compute_dtype(out_dtype)
    with autocast_disabled(value.device):
        output = _sample_and_sum(value.to(work), spatial_shapes, level_start_index, sampling_locations.to(work),
                                 attention_weights.to(work))
    return output.to(out_dtype)


def _sample_and_sum(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    starts = [int(s) for s in level_start_index.tolist()]
    # grid_sample wants coordinates in [-1, 1].
    grids = 2 * sampling_locations - 1
    per_level = []
    for level, ((height, width), start, size) in enumerate(zip(spatial_shapes.tolist(), starts, sizes)):
        # [B, HW, H, D] -> [B*H, D, Hl, Wl]: one image per (batch, head) with D channels.
        level_value = value[:, start:start + size].permute(0, 2, 3, 1).reshape(batch * heads, channels, height, width)
        # [B, Q, H, P, 2] -> [B*H, Q, P, 2]
        level_grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries, points, 2)
        per_level.append(
            F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # [B*H, D, Q, L*P] weighted by [B*H, 1, Q, L*P], summed over samples.
    sampled = torch.stack(per_level, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    output = (sampled * weights).sum(-1).view(batch, heads * channels, queries)
    return output.transpose(1, 2).contiguous()
