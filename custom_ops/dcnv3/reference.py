"""Pure-PyTorch DCNv3 (``grid_sample`` based): the test oracle and the fallback when ``_C`` is absent.

Same semantics as the compiled kernel (see ``csrc/dcnv3_math.h``): for output pixel (ho, wo), group
g and kernel point p = i * Kh + j (i along the width), the location in input pixel coordinates is
the dilated kernel grid around the output's centre plus the learned offset, both times
``offset_scale`` (only the grid and the offset are scaled, not the centre), sampled bilinearly
with zeros outside the map and weighted by the (already softmaxed) mask.

Precision follows the compiled kernel: float16 / bfloat16 inputs are computed in float32 and the
result is rounded to the input dtype once; autocast is switched off inside so it cannot change
that.
"""
import torch
import torch.nn.functional as F

from .._dtypes import autocast_disabled, compute_dtype


def _sampling_locations(offset, height_in, width_in, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                        dilation_h, dilation_w, group, offset_scale):
    """Absolute (x, y) pixel coordinates ``[N, Ho, Wo, G, P, 2]`` of every sample."""
    n, h_out, w_out, _ = offset.shape
    dtype, device = offset.dtype, offset.device
    half_h = (dilation_h * (kernel_h - 1)) // 2
    half_w = (dilation_w * (kernel_w - 1)) // 2
    centre_y = half_h - pad_h + torch.arange(h_out, dtype=dtype, device=device) * stride_h
    centre_x = half_w - pad_w + torch.arange(w_out, dtype=dtype, device=device) * stride_w
    # kernel points ordered with the width index outermost: p = i * Kh + j
    grid_x = (torch.arange(kernel_w, dtype=dtype, device=device) * dilation_w - half_w).repeat_interleave(kernel_h)
    grid_y = (torch.arange(kernel_h, dtype=dtype, device=device) * dilation_h - half_h).repeat(kernel_w)
    off = offset.reshape(n, h_out, w_out, group, kernel_h * kernel_w, 2)
    x = centre_x.view(1, 1, w_out, 1, 1) + (grid_x + off[..., 0]) * offset_scale
    y = centre_y.view(1, h_out, 1, 1, 1) + (grid_y + off[..., 1]) * offset_scale
    return torch.stack((x, y), dim=-1)


def dcnv3_reference(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                    dilation_w, group, group_channels, offset_scale):
    """DCNv3: input ``[N, H, W, G*Cg]``, offset ``[N, Ho, Wo, G*Kh*Kw*2]``, mask ``[N, Ho, Wo, G*Kh*Kw]``
    → ``[N, Ho, Wo, G*Cg]``."""
    out_dtype = input.dtype
    work = compute_dtype(out_dtype)
    with autocast_disabled(input.device):
        output = _sample_and_sum(input.to(work), offset.to(work), mask.to(work), kernel_h, kernel_w, stride_h,
                                 stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels, offset_scale)
    return output.to(out_dtype)


def _sample_and_sum(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                    dilation_w, group, group_channels, offset_scale):
    n, height, width, channels = input.shape
    if channels != group * group_channels:
        raise ValueError(f"dcnv3: input has {channels} channels but group * group_channels = "
                         f"{group} * {group_channels}")
    _, h_out, w_out, _ = offset.shape
    points = kernel_h * kernel_w
    loc = _sampling_locations(offset, height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                              dilation_h, dilation_w, group, offset_scale)
    # grid_sample with align_corners=False puts pixel centres at (i + 0.5) / size in [0, 1] units
    size = torch.tensor([width, height], dtype=input.dtype, device=input.device)
    grid = (loc + 0.5) / size * 2 - 1  # [N, Ho, Wo, G, P, 2]
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(n * group, h_out * w_out, points, 2)
    value = input.reshape(n, height, width, group, group_channels).permute(0, 3, 4, 1, 2)
    value = value.reshape(n * group, group_channels, height, width)
    sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # sampled: [N*G, Cg, Ho*Wo, P]; weight by the mask and sum over the kernel points
    weights = mask.reshape(n, h_out * w_out, group, points).permute(0, 2, 1, 3).reshape(n * group, 1, h_out * w_out, points)
    out = (sampled * weights).sum(-1)  # [N*G, Cg, Ho*Wo]
    out = out.view(n, group, group_channels, h_out, w_out).permute(0, 3, 4, 1, 2)
    return out.reshape(n, h_out, w_out, channels).contiguous()
