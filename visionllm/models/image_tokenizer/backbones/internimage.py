"""InternImage backbone (Wang et al., CVPR 2023) on our DCNv3 operator.

Layout follows the published models so their checkpoints load by key name: a stem of two 3x3
stride-2 convs, four levels of InternImage layers (DCNv3 token mixer + MLP) separated by 3x3
stride-2 downsampling convs, LayerNorm everywhere, channels-last (NHWC) inside the levels.
"""
import math
from typing import List, Optional, Sequence

import torch
from torch import nn

from visionllm.registry import MODELS

from .utils import LevelProjection, freeze_module, freeze_norm_layers, load_local_checkpoint

# Published variants (facts from the InternImage paper and its detection configs).
INTERNIMAGE_VARIANTS = {
    "T": dict(channels=64, depths=(4, 4, 18, 4), groups=(4, 8, 16, 32), layer_scale=1.0,
              offset_scale=1.0, post_norm=False, drop_path_rate=0.2),
    "S": dict(channels=80, depths=(4, 4, 21, 4), groups=(5, 10, 20, 40), layer_scale=1.0,
              offset_scale=1.0, post_norm=True, drop_path_rate=0.3),
    "B": dict(channels=112, depths=(4, 4, 21, 4), groups=(7, 14, 28, 56), layer_scale=1.0,
              offset_scale=1.0, post_norm=True, drop_path_rate=0.4),
    "L": dict(channels=160, depths=(5, 5, 22, 5), groups=(10, 20, 40, 80), layer_scale=1.0,
              offset_scale=2.0, post_norm=True, drop_path_rate=0.4),
    "XL": dict(channels=192, depths=(5, 5, 24, 5), groups=(12, 24, 48, 96), layer_scale=1.0,
               offset_scale=2.0, post_norm=True, drop_path_rate=0.4),
    "H": dict(channels=320, depths=(6, 6, 32, 6), groups=(10, 20, 40, 80), layer_scale=None,
              offset_scale=1.0, post_norm=False, drop_path_rate=0.5, dw_kernel_size=5,
              res_post_norm=True, level2_post_norm=True, level2_post_norm_block_ids=(5, 11, 17, 23, 29),
              center_feature_scale=True),
}


class _Permute(nn.Module):
    """NCHW <-> NHWC inside an ``nn.Sequential`` (keeps the published key names)."""

    def __init__(self, *dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


def _to_last():
    return _Permute(0, 2, 3, 1)


def _to_first():
    return _Permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


class StemLayer(nn.Module):
    """Two 3x3 stride-2 convs: image ``[N,3,H,W]`` → NHWC features at stride 4."""

    def __init__(self, in_chans: int = 3, out_chans: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = nn.Sequential(_to_last(), nn.LayerNorm(out_chans // 2, eps=1e-6), _to_first())
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(out_chans // 2, out_chans, kernel_size=3, stride=2, padding=1)
        self.norm2 = nn.Sequential(_to_last(), nn.LayerNorm(out_chans, eps=1e-6))

    def forward(self, x):
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class DownsampleLayer(nn.Module):
    """3x3 stride-2 conv doubling the channels, NHWC in and out."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.Sequential(_to_last(), nn.LayerNorm(2 * channels, eps=1e-6))

    def forward(self, x):
        return self.norm(self.conv(x.permute(0, 3, 1, 2)))


class MLPLayer(nn.Module):
    def __init__(self, channels: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _layer_norm(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(channels, eps=1e-6))


class InternImageLayer(nn.Module):
    """DCNv3 token mixer + MLP, each a residual branch.

    Three residual arrangements are used by the published models: pre-norm (T), post-norm
    (``post_norm``: S/B/L/XL, norm after the branch) and res-post-norm (H: pre-norm plus a
    norm at the end of each branch). ``layer_scale`` multiplies each branch by a learned
    per-channel vector (initialised to the given value) to stabilise deep models.
    """

    def __init__(self, channels: int, groups: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, post_norm: bool = False, layer_scale: Optional[float] = None,
                 offset_scale: float = 1.0, dw_kernel_size: Optional[int] = None,
                 res_post_norm: bool = False, center_feature_scale: bool = False):
        super().__init__()
        from custom_ops.dcnv3 import DCNv3  # the op package may be built after this module

        self.post_norm = post_norm
        self.res_post_norm = res_post_norm
        self.norm1 = _layer_norm(channels)
        self.dcn = DCNv3(channels=channels, kernel_size=3, dw_kernel_size=dw_kernel_size, stride=1, pad=1,
                         dilation=1, group=groups, offset_scale=offset_scale, act_layer="GELU",
                         norm_layer="LN", center_feature_scale=center_feature_scale)
        self.drop_path = DropPath(drop_path)
        self.norm2 = _layer_norm(channels)
        self.mlp = MLPLayer(channels, int(channels * mlp_ratio), drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(channels))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(channels))
        if res_post_norm:
            self.res_post_norm1 = _layer_norm(channels)
            self.res_post_norm2 = _layer_norm(channels)

    def _branch(self, x, mixer, pre_norm, res_norm, gamma):
        if self.post_norm:
            out = pre_norm(mixer(x))
        else:
            out = mixer(pre_norm(x))
            if self.res_post_norm:
                out = res_norm(out)
        if gamma is not None:
            out = gamma * out
        return x + self.drop_path(out)

    def forward(self, x):
        g1 = self.gamma1 if self.layer_scale else None
        g2 = self.gamma2 if self.layer_scale else None
        x = self._branch(x, self.dcn, self.norm1, getattr(self, "res_post_norm1", None), g1)
        return self._branch(x, self.mlp, self.norm2, getattr(self, "res_post_norm2", None), g2)


class InternImageBlock(nn.Module):
    """One level: ``depth`` layers, optional extra norms inside, final norm, downsampling."""

    def __init__(self, channels: int, depth: int, groups: int, downsample: bool, drop_path: Sequence[float],
                 post_norm: bool = False, post_norm_block_ids: Optional[Sequence[int]] = None,
                 center_feature_scale: bool = False, **layer_kwargs):
        super().__init__()
        self.blocks = nn.ModuleList(
            InternImageLayer(channels, groups, drop_path=drop_path[i], post_norm=post_norm,
                             center_feature_scale=center_feature_scale, **layer_kwargs)
            for i in range(depth))
        # A post-norm level already ends with a norm, except with center feature scale (H).
        self.has_final_norm = not post_norm or center_feature_scale
        if self.has_final_norm:
            self.norm = _layer_norm(channels)
        self.post_norm_block_ids = list(post_norm_block_ids) if post_norm_block_ids is not None else None
        if self.post_norm_block_ids is not None:
            # level2-post-norm (H): extra norms every few layers of the deep third level.
            self.post_norms = nn.ModuleList(_layer_norm(channels) for _ in self.post_norm_block_ids)
        self.downsample = DownsampleLayer(channels) if downsample else None

    def forward(self, x):
        """NHWC in → (level output before downsampling, input of the next level)."""
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if self.post_norm_block_ids is not None and i in self.post_norm_block_ids:
                x = self.post_norms[self.post_norm_block_ids.index(i)](x)
        if self.has_final_norm:
            x = self.norm(x)
        return x, (self.downsample(x) if self.downsample is not None else x)


@MODELS.register_module()
class InternImage(nn.Module):
    """InternImage feature extractor: NCHW levels at strides 4/8/16/32 (``out_indices``).

    Args:
        variant: 'T', 'S', 'B', 'L', 'XL' or 'H' fills the published hyper-parameters; any
            explicit keyword argument overrides them (tests use tiny widths).
        channels: width of the first level (doubled per level).
        depths, groups: layers and DCNv3 groups per level.
        mlp_ratio, drop_rate, drop_path_rate: MLP width and regularisation (drop path grows
            linearly with depth).
        layer_scale, post_norm, res_post_norm, center_feature_scale, level2_post_norm,
        level2_post_norm_block_ids, offset_scale, dw_kernel_size: options of the published models.
        checkpoint: optional local checkpoint (``backbone.`` keys of a detector are accepted).
        frozen_stages: -1 none; 0 the stem; k also levels 0..k-1.
        norm_eval: norm layers frozen.
        freeze: freeze the whole backbone (stage 2 of the paper schedule).
    """

    def __init__(self, variant: Optional[str] = None, channels: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None, groups: Optional[Sequence[int]] = None,
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0, drop_path_rate: Optional[float] = None,
                 layer_scale=..., offset_scale: Optional[float] = None, post_norm: Optional[bool] = None,
                 dw_kernel_size=..., res_post_norm: Optional[bool] = None,
                 center_feature_scale: Optional[bool] = None, level2_post_norm: Optional[bool] = None,
                 level2_post_norm_block_ids=..., out_indices: Sequence[int] = (0, 1, 2, 3),
                 checkpoint: Optional[str] = None, frozen_stages: int = -1, norm_eval: bool = False,
                 freeze: bool = False):
        super().__init__()
        cfg = dict(channels=64, depths=(4, 4, 18, 4), groups=(4, 8, 16, 32), layer_scale=None,
                   offset_scale=1.0, post_norm=False, drop_path_rate=0.2, dw_kernel_size=None,
                   res_post_norm=False, center_feature_scale=False, level2_post_norm=False,
                   level2_post_norm_block_ids=None)
        if variant is not None:
            cfg.update(INTERNIMAGE_VARIANTS[variant.upper()])
        explicit = dict(channels=channels, depths=depths, groups=groups, drop_path_rate=drop_path_rate,
                        offset_scale=offset_scale, post_norm=post_norm, res_post_norm=res_post_norm,
                        center_feature_scale=center_feature_scale, level2_post_norm=level2_post_norm)
        cfg.update({k: v for k, v in explicit.items() if v is not None})
        # ``...`` marks "not given" for options whose explicit value may be None.
        for key, value in (("layer_scale", layer_scale), ("dw_kernel_size", dw_kernel_size),
                           ("level2_post_norm_block_ids", level2_post_norm_block_ids)):
            if value is not ...:
                cfg[key] = value
        self.cfg = cfg
        depths = list(cfg["depths"])
        num_levels = len(depths)
        self.patch_embed = StemLayer(3, cfg["channels"])
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, cfg["drop_path_rate"], sum(depths), device="cpu").tolist()
        self.levels = nn.ModuleList()
        for i in range(num_levels):
            start = sum(depths[:i])
            self.levels.append(InternImageBlock(
                channels=cfg["channels"] * 2 ** i, depth=depths[i], groups=cfg["groups"][i],
                downsample=i < num_levels - 1, drop_path=dpr[start:start + depths[i]],
                post_norm=cfg["post_norm"],
                post_norm_block_ids=cfg["level2_post_norm_block_ids"] if cfg["level2_post_norm"] and i == 2 else None,
                center_feature_scale=cfg["center_feature_scale"], mlp_ratio=mlp_ratio, drop=drop_rate,
                layer_scale=cfg["layer_scale"], offset_scale=cfg["offset_scale"],
                dw_kernel_size=cfg["dw_kernel_size"], res_post_norm=cfg["res_post_norm"]))
        self.out_indices = tuple(out_indices)
        self.out_channels = [cfg["channels"] * 2 ** i for i in self.out_indices]
        self.out_strides = [4 * 2 ** i for i in self.out_indices]
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.freeze = freeze
        self._init_weights()
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        self._freeze()

    def _init_weights(self):
        if next(self.parameters()).is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                # InternImage draws from a normal truncated at +-2 (absolute), i.e. +-100 std at
                # std 0.02: a plain normal is the same distribution and much faster to sample
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # DCNv3 starts from zero offsets and uniform masks: restore its own initialisation.
        for m in self.modules():
            if type(m).__name__ == "DCNv3" and hasattr(m, "_reset_parameters"):
                m._reset_parameters()

    def load_checkpoint(self, path: str, prefix: Optional[str] = None):
        """Load published or own weights from a local file; returns (missing, unexpected) keys."""
        if prefix is None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
            if any(k.startswith("backbone.") for k in state):
                prefix = "backbone."
        return load_local_checkpoint(self, path, prefix=prefix)

    def _freeze(self):
        if self.freeze:
            freeze_module(self)
            return
        if self.frozen_stages >= 0:
            freeze_module(self.patch_embed)
        for i in range(min(self.frozen_stages, len(self.levels))):
            freeze_module(self.levels[i])
        if self.norm_eval:
            freeze_norm_layers(self)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            self._freeze()
        return self

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        x = self.pos_drop(self.patch_embed(images))
        outs = []
        for i, level in enumerate(self.levels):
            level_out, x = level(x)
            if i in self.out_indices:
                outs.append(level_out.permute(0, 3, 1, 2).contiguous())
        return outs


@MODELS.register_module()
class InternImageBackbone(nn.Module):
    """InternImage levels at strides 8/16/32 plus extra stride-64 level(s), projected to ``embed_dims``.

    Args:
        embed_dims: transformer width.
        out_indices: InternImage levels used (1, 2, 3 = strides 8, 16, 32).
        num_extra_levels: extra 3x3 stride-2 levels.
        freeze_projection: also freeze the projection layers.
        **internimage: arguments of :class:`InternImage` (``variant='T'`` ... ``'H'`` etc.).
    """

    def __init__(self, embed_dims: int = 256, out_indices: Sequence[int] = (1, 2, 3), num_extra_levels: int = 1,
                 freeze_projection: bool = False, **internimage):
        super().__init__()
        self.body = InternImage(out_indices=out_indices, **internimage)
        self.in_channels = self.body.out_channels
        self.strides = self.body.out_strides + [self.body.out_strides[-1] * 2 ** (i + 1)
                                                for i in range(num_extra_levels)]
        self.projection = LevelProjection(self.in_channels, embed_dims, num_extra_levels)
        self.embed_dims = embed_dims
        self.num_levels = len(self.strides)
        self.freeze_projection = freeze_projection
        if freeze_projection:
            freeze_module(self.projection)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_projection:
            self.projection.eval()
        return self

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        return self.projection(self.body(images))
