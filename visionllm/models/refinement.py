"""Refinement of the LLM's decoded boxes and polygons on the image tokenizer's multi-scale features."""
from typing import Dict, List

import torch
from torch import nn

from visionllm.models.image_tokenizer.deformable_transformer import FFN, _ms_deform_attn, inverse_sigmoid
from visionllm.models.image_tokenizer.positional_encoding import sine_point_features
from visionllm.registry import MODELS


def extent_boxes(points: torch.Tensor) -> torch.Tensor:
    """Points ``[..., K, 2]`` → the boxes ``[..., 4]`` (x1, y1, x2, y2) they span."""
    return torch.cat([points.min(dim=-2).values, points.max(dim=-2).values], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1)


def point_to_outline_distance(points: torch.Tensor, polygons: torch.Tensor) -> torch.Tensor:
    """Euclidean distance ``[n, P]`` of each point ``[n, P, 2]`` to the outline (closed chain of
    edges) of its polygon ``[n, K, 2]``."""
    starts, ends = polygons, polygons.roll(-1, dims=1)
    edges = (ends - starts)[:, None]  # [n, 1, K, 2]
    offsets = points[:, :, None] - starts[:, None]  # [n, P, K, 2]
    along = ((offsets * edges).sum(-1) / (edges * edges).sum(-1).clamp(min=1e-12)).clamp(0, 1)
    return (offsets - along[..., None] * edges).norm(dim=-1).amin(-1)


def densify_outline(polygons: torch.Tensor, per_edge: int) -> torch.Tensor:
    """``per_edge`` evenly spaced points on each edge of polygons ``[n, K, 2]`` → ``[n, K * per_edge, 2]``
    (the vertices first on each edge)."""
    steps = torch.arange(per_edge, dtype=polygons.dtype, device=polygons.device) / per_edge
    edges = polygons.roll(-1, dims=1) - polygons
    return (polygons[:, :, None] + steps[None, None, :, None] * edges[:, :, None]).flatten(1, 2)


def outline_distance(pred: torch.Tensor, target: torch.Tensor, per_edge: int = 4) -> torch.Tensor:
    """Symmetric mean distance ``[n]`` between two polygons' outlines (``[n, K, 2]`` each).

    What a mask sees of a polygon is its outline, not which vertex sits where: the LLM's
    K-point polygon and the K-point ground truth may start at different places or space their
    vertices differently and still cover the same mask, which a vertex-to-vertex L1 would punish.
    Both directions count, so the prediction must lie on the target's outline and cover all of it.
    """
    there = point_to_outline_distance(densify_outline(pred, per_edge), target).mean(-1)
    back = point_to_outline_distance(densify_outline(target, per_edge), pred).mean(-1)
    return (there + back) / 2


class _DeformableRefinementSteps(nn.Module):
    """The layers shared by the box and polygon refinements: per step, a multi-scale deformable
    attention from each query at its reference (a point or a box), an FFN, and a correction of
    ``out_dims`` numbers whose last layer starts at zero (the decoded geometry comes out
    unchanged until the refinement is trained)."""

    def __init__(self, embed_dims: int, num_levels: int, num_layers: int, num_heads: int, num_points: int,
                 ffn_dims: int, out_dims: int):
        super().__init__()
        self.attns = nn.ModuleList(_ms_deform_attn(embed_dims, num_levels, num_heads, num_points)
                                   for _ in range(num_layers))
        self.norms1 = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(num_layers))
        self.ffns = nn.ModuleList(FFN(embed_dims, ffn_dims, 0.0) for _ in range(num_layers))
        self.norms2 = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(num_layers))
        self.deltas = nn.ModuleList(
            nn.Sequential(nn.Linear(embed_dims, embed_dims), nn.ReLU(), nn.Linear(embed_dims, out_dims))
            for _ in range(num_layers))

    def init_weights(self) -> None:
        """The last layer of every correction starts at zero (meta tensors are left alone); the
        model's ``init_weights`` calls this."""
        for delta in self.deltas:
            if not delta[-1].weight.is_meta:
                nn.init.zeros_(delta[-1].weight)
                nn.init.zeros_(delta[-1].bias)

    @property
    def num_layers(self) -> int:
        return len(self.attns)

    def _step(self, layer: int, x: torch.Tensor, pos: torch.Tensor, reference: torch.Tensor,
              features: Dict[str, torch.Tensor]):
        """x, pos ``[B, Q, C]``; reference ``[B, Q, 2 or 4]`` normalised by each image's valid
        size. Returns the updated queries and their correction ``[B, Q, out_dims]``."""
        # the memory's sampling frame is the padded image; each image's geometry lives in its valid area
        ratios = features["valid_ratios"].repeat(1, 1, reference.shape[-1] // 2)
        x = self.norms1[layer](x + self.attns[layer](
            x + pos, reference[:, :, None] * ratios[:, None], features["memory"], features["spatial_shapes"],
            features["level_start_index"], features["padding_mask"]))
        x = self.norms2[layer](x + self.ffns[layer](x))
        return x, self.deltas[layer](x)


@MODELS.register_module()
class BoxRefinement(_DeformableRefinementSteps):
    """Deformable-DETR box refinement steps applied to the boxes the LLM decoded.

    The LLM reads each object through one image token and writes its corners as location tokens,
    so it finds the right object more easily than its exact edges. Each step here samples the
    encoder memory inside the box (deformable attention with the box as reference, so the
    sampling grid scales with the box) from the slot's image token as
    query, and predicts a correction of (cx, cy, w, h) in logit space, as Deformable-DETR's
    iterative refinement does.

    Args:
        embed_dims / num_levels: width and levels of the image tokenizer's memory.
        num_layers: refinement steps (each samples at the previous step's box).
        num_heads / num_points / ffn_dims: the deformable attention layer and its FFN.
    """

    def __init__(self, embed_dims: int, num_levels: int, num_layers: int = 2, num_heads: int = 4,
                 num_points: int = 4, ffn_dims: int = 512, num_box_feats: int = 16):
        super().__init__(embed_dims, num_levels, num_layers, num_heads, num_points, ffn_dims, out_dims=4)
        self.num_box_feats = num_box_feats
        self.box_pos = nn.Linear(4 * num_box_feats, embed_dims)

    def encode_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        feats = sine_point_features(boxes, self.num_box_feats, 20.0)
        return self.box_pos(feats.to(self.box_pos.weight.dtype))

    def forward(self, queries: torch.Tensor, boxes: torch.Tensor, features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """queries ``[B, N, C]`` (the slots' image tokens), boxes ``[B, N, 4]`` (x1, y1, x2, y2)
        normalised by each image's valid size, ``features``: the tokenizer's ``memory [B, S, C]``
        with its ``spatial_shapes``, ``level_start_index``, ``padding_mask`` and
        ``valid_ratios [B, L, 2]``. Returns the boxes after every step (last = final), same
        layout; each step starts from the previous one's box without back-propagating into it."""
        boxes = xyxy_to_cxcywh(boxes.detach()).clamp(1e-4, 1 - 1e-4)
        x = queries
        steps = []
        for layer in range(self.num_layers):
            x, delta = self._step(layer, x, self.encode_boxes(boxes), boxes, features)
            refined = (inverse_sigmoid(boxes) + delta).sigmoid()
            steps.append(cxcywh_to_xyxy(refined))
            boxes = refined.detach()
        return steps


@MODELS.register_module()
class PolygonRefinement(_DeformableRefinementSteps):
    """Refinement steps of the vertices of the polygons the LLM decoded.

    Polygons have the boxes' problem (the right object, the outline a pixel or two off) without a
    box to sample: each vertex is a query of its own,
    starting from the slot's image token, that first attends to the other vertices of its
    polygon (a vertex alone cannot tell which way the outline runs), then samples the encoder
    memory around itself (deformable attention with the vertex as reference point), and moves
    by a correction of (x, y) in logit space. Its position encoding holds the vertex and the
    polygon's extent box, so the sampling can scale with the object.

    Args: as :class:`BoxRefinement`; ``num_feats`` sine features per coordinate.
    """

    def __init__(self, embed_dims: int, num_levels: int, num_layers: int = 2, num_heads: int = 4,
                 num_points: int = 4, ffn_dims: int = 512, num_feats: int = 16):
        super().__init__(embed_dims, num_levels, num_layers, num_heads, num_points, ffn_dims, out_dims=2)
        self.num_feats = num_feats
        self.vertex_pos = nn.Linear(2 * num_feats, embed_dims)
        self.extent_pos = nn.Linear(4 * num_feats, embed_dims)
        self.vertex_attns = nn.ModuleList(nn.MultiheadAttention(embed_dims, num_heads, batch_first=True)
                                          for _ in range(num_layers))
        self.norms0 = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(num_layers))

    def encode(self, vertices: torch.Tensor) -> torch.Tensor:
        """``[..., K, 2]`` vertices → ``[..., K, C]``: the vertex plus its polygon's extent."""
        dtype = self.vertex_pos.weight.dtype
        return (self.vertex_pos(sine_point_features(vertices, self.num_feats, 20.0).to(dtype))
                + self.extent_pos(sine_point_features(extent_boxes(vertices), self.num_feats, 20.0).to(dtype))[..., None, :])

    def forward(self, queries: torch.Tensor, polygons: torch.Tensor, features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """queries ``[B, N, C]`` (the slots' image tokens), polygons ``[B, N, K, 2]`` (x, y)
        normalised by each image's valid size, ``features`` as for :class:`BoxRefinement`.
        Returns the polygons after every step (last = final), same layout."""
        batch, num, k, _ = polygons.shape
        vertices = polygons.detach().clamp(1e-4, 1 - 1e-4)
        x = queries[:, :, None].expand(batch, num, k, queries.shape[-1])
        steps = []
        for layer in range(self.num_layers):
            pos = self.encode(vertices)
            flat = (x + pos).reshape(batch * num, k, -1)
            mixed, _ = self.vertex_attns[layer](flat, flat, x.reshape(batch * num, k, -1), need_weights=False)
            x = self.norms0[layer](x + mixed.view_as(x))
            x, delta = self._step(layer, x.reshape(batch, num * k, -1), pos.reshape(batch, num * k, -1),
                                  vertices.reshape(batch, num * k, 2), features)
            x = x.view(batch, num, k, -1)
            refined = (inverse_sigmoid(vertices) + delta.view(batch, num, k, 2)).sigmoid()
            steps.append(refined)
            vertices = refined.detach()
        return steps
