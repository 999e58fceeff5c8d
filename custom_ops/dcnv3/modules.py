"""The DCNv3 token mixer of InternImage, on the ``dcnv3`` op.

Parameter names follow InternImage (``input_proj``, ``dw_conv``, ``offset``, ``mask``,
``output_proj``, ``center_feature_scale_proj_*``) so published checkpoints load 1:1.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionllm.registry import MODELS

from .function import dcnv3


class _ToChannelsLast(nn.Module):
    """[N, C, H, W] → [N, H, W, C]."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def _norm_to_channels_last(channels, norm_layer):
    """Norm of the depthwise-conv branch: takes NCHW, returns NHWC (InternImage layout of the keys)."""
    if norm_layer == "LN":
        return nn.Sequential(_ToChannelsLast(), nn.LayerNorm(channels, eps=1e-6))
    if norm_layer == "BN":
        return nn.Sequential(nn.BatchNorm2d(channels), _ToChannelsLast())
    raise ValueError(f"DCNv3: unknown norm_layer {norm_layer!r}; expected 'LN' or 'BN'")


def _activation(act_layer):
    layers = {"GELU": nn.GELU, "ReLU": nn.ReLU, "SiLU": nn.SiLU}
    if act_layer not in layers:
        raise ValueError(f"DCNv3: unknown act_layer {act_layer!r}; expected one of {sorted(layers)}")
    return layers[act_layer]()


@MODELS.register_module()
class DCNv3(nn.Module):
    """Deformable convolution v3: per-group offsets and softmax-normalised masks predicted from a
    depthwise conv of the input, shared projection weights across groups.

    ``forward(x [N, H, W, C]) → [N, Ho, Wo, C]`` (Ho = H, Wo = W for the usual stride 1, pad
    (kernel-1)/2). With ``center_feature_scale`` the output is blended with the projected input by a
    learned per-group sigmoid gate.
    """

    def __init__(self, channels=64, kernel_size=3, dw_kernel_size=None, stride=1, pad=1, dilation=1, group=4,
                 offset_scale=1.0, act_layer="GELU", norm_layer="LN", center_feature_scale=False):
        super().__init__()
        if channels % group != 0:
            raise ValueError(f"DCNv3: channels ({channels}) must be divisible by group ({group})")
        if center_feature_scale and stride != 1:
            raise ValueError("DCNv3: center_feature_scale blends input and output, so it needs stride 1")
        dw_kernel_size = dw_kernel_size if dw_kernel_size is not None else kernel_size
        self.channels = channels
        self.kernel_size = kernel_size
        self.dw_kernel_size = dw_kernel_size
        self.stride = stride
        self.pad = pad
        self.dilation = dilation
        self.group = group
        self.group_channels = channels // group
        self.offset_scale = offset_scale
        self.center_feature_scale = center_feature_scale

        points = kernel_size * kernel_size
        # offsets and masks are predicted at the output resolution of a stride-`stride` conv
        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, dw_kernel_size, stride=1, padding=(dw_kernel_size - 1) // 2,
                      groups=channels),
            _norm_to_channels_last(channels, norm_layer),
            _activation(act_layer),
        )
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))
        self._reset_parameters()

    def _reset_parameters(self):
        # zero offsets and zero mask logits: every layer starts as a uniform average over the
        # regular kernel grid, which is what makes DCNv3 train stably from scratch
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        nn.init.zeros_(self.mask.weight)
        nn.init.zeros_(self.mask.bias)
        nn.init.xavier_uniform_(self.input_proj.weight)
        nn.init.zeros_(self.input_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)
        if self.center_feature_scale:
            nn.init.zeros_(self.center_feature_scale_proj_weight)
            nn.init.zeros_(self.center_feature_scale_proj_bias)

    def forward(self, x):
        n, h, w, _ = x.shape
        x_proj = self.input_proj(x)
        features = self.dw_conv(x.permute(0, 3, 1, 2))  # NHWC after the norm
        if self.stride != 1:
            # the op wants offsets at its output resolution; sample the features there
            features = features[:, :: self.stride, :: self.stride]
        features = features.contiguous()
        ho, wo = features.shape[1:3]
        offset = self.offset(features).contiguous()
        mask = self.mask(features).reshape(n, ho, wo, self.group, -1)
        mask = F.softmax(mask, dim=-1).reshape(n, ho, wo, -1).to(x_proj.dtype).contiguous()
        k = self.kernel_size
        out = dcnv3(x_proj.contiguous(), offset, mask, k, k, self.stride, self.stride, self.pad, self.pad,
                    self.dilation, self.dilation, self.group, self.group_channels, self.offset_scale)
        if self.center_feature_scale:
            gate = F.linear(features, self.center_feature_scale_proj_weight,
                            self.center_feature_scale_proj_bias).sigmoid()  # [N, Ho, Wo, G]
            gate = gate.repeat_interleave(self.group_channels, dim=-1)
            out = out * (1 - gate) + x_proj * gate
        return self.output_proj(out)
