"""Deformable-DETR encoder / decoder producing M image tokens with reference points."""
import copy
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from visionllm.registry import MODELS

from .positional_encoding import SinePositionalEncoding


def _ms_deform_attn(*args, **kwargs):
    from custom_ops.ms_deform_attn import MSDeformAttn  # op package built alongside this one
    return MSDeformAttn(*args, **kwargs)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class FFN(nn.Module):
    def __init__(self, embed_dims: int, ffn_dims: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(embed_dims, ffn_dims)
        self.linear2 = nn.Linear(ffn_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: multi-scale deformable self-attention, then FFN."""

    def __init__(self, embed_dims: int = 256, num_levels: int = 4, num_heads: int = 8, num_points: int = 4,
                 ffn_dims: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.self_attn = _ms_deform_attn(embed_dims=embed_dims, num_levels=num_levels, num_heads=num_heads,
                                         num_points=num_points)
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, ffn_dims, dropout)
        self.norm2 = nn.LayerNorm(embed_dims)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask):
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout(attended))
        return self.norm2(src + self.ffn(src))


class DeformableDecoderLayer(nn.Module):
    """Post-norm layer: query self-attention, deformable cross-attention to the memory, FFN."""

    def __init__(self, embed_dims: int = 256, num_levels: int = 4, num_heads: int = 8, num_points: int = 4,
                 ffn_dims: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.cross_attn = _ms_deform_attn(embed_dims=embed_dims, num_levels=num_levels, num_heads=num_heads,
                                          num_points=num_points)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, ffn_dims, dropout)
        self.norm3 = nn.LayerNorm(embed_dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, query_pos, reference_points, memory, spatial_shapes, level_start_index, padding_mask):
        q = k = tgt + query_pos
        attended, _ = self.self_attn(q, k, tgt, need_weights=False)
        tgt = self.norm1(tgt + self.dropout(attended))
        attended = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index,
                                   padding_mask)
        tgt = self.norm2(tgt + self.dropout(attended))
        return self.norm3(tgt + self.ffn(tgt))


def _mlp(in_dims: int, hidden: int, out_dims: int, num_layers: int) -> nn.Sequential:
    layers = []
    dims = [in_dims] + [hidden] * (num_layers - 1)
    for i, d in enumerate(dims):
        layers.append(nn.Linear(d, hidden if i < num_layers - 1 else out_dims))
        if i < num_layers - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
    """mask ``[B, H, W]`` (True = padding, top-left aligned images) → ``[B, 2]`` (w, h) valid fractions."""
    _, h, w = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).float()
    valid_w = (~mask[:, 0, :]).sum(1).float()
    return torch.stack([valid_w / w, valid_h / h], -1)


def encoder_reference_points(spatial_shapes: List, ratios: torch.Tensor) -> torch.Tensor:
    """Centre of every position of every level, normalised by the valid extent of its image.

    Returns ``[B, S, L, 2]``: the same point expressed in every level's padded [0, 1] frame.
    """
    points = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        ys, xs = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, device=ratios.device),
                                torch.linspace(0.5, w - 0.5, w, device=ratios.device), indexing="ij")
        ys = ys.reshape(1, -1) / (ratios[:, None, lvl, 1] * h)
        xs = xs.reshape(1, -1) / (ratios[:, None, lvl, 0] * w)
        points.append(torch.stack((xs, ys), -1))
    points = torch.cat(points, 1)
    return points[:, :, None] * ratios[:, None]


@MODELS.register_module()
class DeformableTransformer(nn.Module):
    """Encoder over all feature levels, decoder with ``num_queries`` learned queries.

    Args:
        embed_dims, num_levels, num_heads, num_points, ffn_dims, dropout: layer sizes
            (Deformable-DETR defaults).
        num_encoder_layers, num_decoder_layers: depth (6 / 6 by default).
        num_queries: M, the number of image tokens.
        iterative_refinement: each decoder layer refines the reference points (an MLP predicts a
            correction in logit space); the final points are the tokens' reference points.
    """

    def __init__(self, embed_dims: int = 256, num_levels: int = 4, num_heads: int = 8, num_points: int = 4,
                 ffn_dims: int = 1024, dropout: float = 0.1, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, num_queries: int = 100, iterative_refinement: bool = False):
        super().__init__()
        layer_args = dict(embed_dims=embed_dims, num_levels=num_levels, num_heads=num_heads, num_points=num_points,
                          ffn_dims=ffn_dims, dropout=dropout)
        self.encoder_layers = nn.ModuleList(DeformableEncoderLayer(**layer_args) for _ in range(num_encoder_layers))
        self.decoder_layers = nn.ModuleList(DeformableDecoderLayer(**layer_args) for _ in range(num_decoder_layers))
        self.positional_encoding = SinePositionalEncoding(embed_dims // 2)
        self.level_embed = nn.Parameter(torch.empty(num_levels, embed_dims))
        # first half: positional part of the query, second half: its content
        self.query_embed = nn.Embedding(num_queries, 2 * embed_dims)
        self.reference_points = nn.Linear(embed_dims, 2)
        self.iterative_refinement = iterative_refinement
        if iterative_refinement:
            self.refine_heads = nn.ModuleList(_mlp(embed_dims, embed_dims, 2, 3) for _ in range(num_decoder_layers))
        self.embed_dims = embed_dims
        self.num_levels = num_levels
        self.num_queries = num_queries
        self.reset_parameters()

    def reset_parameters(self):
        if self.level_embed.is_meta:
            return
        nn.init.normal_(self.level_embed)
        nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
        nn.init.zeros_(self.reference_points.bias)
        if self.iterative_refinement:
            for head in self.refine_heads:  # start from the unrefined points
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)

    def flatten_levels(self, features: List[torch.Tensor], masks: List[torch.Tensor]) -> Dict:
        """Concatenate the levels into one sequence with positional + level embeddings."""
        srcs, poss, flat_masks, shapes = [], [], [], []
        for lvl, (feat, mask) in enumerate(zip(features, masks)):
            h, w = feat.shape[-2:]
            shapes.append((h, w))
            pos = self.positional_encoding(mask).to(feat.dtype)
            srcs.append(feat.flatten(2).transpose(1, 2))
            poss.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
            flat_masks.append(mask.flatten(1))
        device = features[0].device
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=device)
        level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        return dict(src=torch.cat(srcs, 1), pos=torch.cat(poss, 1), padding_mask=torch.cat(flat_masks, 1),
                    spatial_shapes=spatial_shapes, shapes=shapes, level_start_index=level_start_index,
                    valid_ratios=torch.stack([valid_ratios(m) for m in masks], 1))

    def encode(self, flat: Dict) -> torch.Tensor:
        reference_points = encoder_reference_points(flat["shapes"], flat["valid_ratios"])
        memory = flat["src"]
        for layer in self.encoder_layers:
            memory = layer(memory, flat["pos"], reference_points, flat["spatial_shapes"], flat["level_start_index"],
                           flat["padding_mask"])
        return memory

    def decode(self, memory: torch.Tensor, flat: Dict):
        batch = memory.shape[0]
        query_pos, tgt = self.query_embed.weight.split(self.embed_dims, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(batch, -1, -1)
        tgt = tgt.unsqueeze(0).expand(batch, -1, -1)
        reference_points = self.reference_points(query_pos).sigmoid()  # in each image's valid frame
        ratios = flat["valid_ratios"]
        layer_embeds, layer_points = [], []
        for i, layer in enumerate(self.decoder_layers):
            tgt = layer(tgt, query_pos, reference_points[:, :, None] * ratios[:, None], memory,
                        flat["spatial_shapes"], flat["level_start_index"], flat["padding_mask"])
            if self.iterative_refinement:
                refined = (self.refine_heads[i](tgt) + inverse_sigmoid(reference_points)).sigmoid()
                layer_embeds.append(tgt)
                layer_points.append(refined)
                # the next layer samples at the refined points but does not back-propagate into them
                reference_points = refined.detach()
            else:
                layer_embeds.append(tgt)
                layer_points.append(reference_points)
        return layer_embeds, layer_points

    def forward(self, features: List[torch.Tensor], masks: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """features: levels ``[B, C, H_l, W_l]``; masks: ``[B, H_l, W_l]`` bool True = padding.

        Returns ``embeds [B, M, C]``, ``reference_points [B, M, 2]`` (cx, cy) in [0, 1] of each
        image's valid area (both from the last decoder layer), the same per decoder layer in
        ``layer_embeds`` / ``layer_reference_points`` (lists, for auxiliary losses), and
        ``memory_features``: the encoder ``memory [B, S, C]`` with what a deformable attention
        needs to read it (``spatial_shapes``, ``level_start_index``, ``padding_mask [B, S]``,
        ``valid_ratios [B, L, 2]``).
        """
        flat = self.flatten_levels(features, masks)
        memory = self.encode(flat)
        layer_embeds, layer_points = self.decode(memory, flat)
        memory_features = dict(memory=memory, spatial_shapes=flat["spatial_shapes"],
                               level_start_index=flat["level_start_index"], padding_mask=flat["padding_mask"],
                               valid_ratios=flat["valid_ratios"])
        return dict(embeds=layer_embeds[-1], reference_points=layer_points[-1], layer_embeds=layer_embeds,
                    layer_reference_points=layer_points, memory_features=memory_features)
