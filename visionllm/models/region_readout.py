"""What the image tokenizer saw inside a box: a feature vector per region of the instruction."""
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from visionllm.registry import MODELS


@MODELS.register_module()
class RegionReadout(nn.Module):
    """Pool the encoder memory inside each region box and project it into the LLM's width.

    Every level of the multi-scale memory is sampled bilinearly (``grid_sample``) at the centres
    of a ``grid_size x grid_size`` grid of cells covering the box, so the read-out scales with the
    box as an RoI-Align does; the samples are averaged over the grid and the levels and mapped by
    a linear layer to ``hidden_size``. The vector is added to the embeddings of the region's
    location tokens in the prompt (``LanguageModelDecoder``), so the LLM reads where the region
    is from the tokens and what is there from the vector.

    The linear layer starts at zero (``init_weights``): until trained the region's prompt is its
    location tokens alone, and a checkpoint from before this part loads with that starting value
    (``visionllm.engine.checkpoint_conversion``, version 3).

    Args:
        embed_dims: width of the tokenizer's memory.
        hidden_size: width of the LLM's input embeddings.
        grid_size: sampling points per box side.
    """

    def __init__(self, embed_dims: int, hidden_size: int, grid_size: int = 4):
        super().__init__()
        if grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        self.grid_size = grid_size
        self.projection = nn.Linear(embed_dims, hidden_size)

    def init_weights(self) -> None:
        """Zero output until trained (meta tensors are left alone)."""
        if not self.projection.weight.is_meta:
            nn.init.zeros_(self.projection.weight)
            nn.init.zeros_(self.projection.bias)

    def _grid(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes ``[R, 4]`` normalised to [0, 1] → cell centres ``[R, G*G, 2]`` (x, y) in [0, 1]."""
        steps = (torch.arange(self.grid_size, device=boxes.device, dtype=boxes.dtype) + 0.5) / self.grid_size
        x = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # [R, G]
        y = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
        return torch.stack([x[:, None, :].expand(-1, self.grid_size, -1),
                            y[:, :, None].expand(-1, -1, self.grid_size)], dim=-1).flatten(1, 2)

    def pooled(self, features: Dict[str, torch.Tensor], row: int, boxes: torch.Tensor) -> torch.Tensor:
        """Memory features ``[R, embed_dims]`` of image ``row`` averaged inside ``boxes [R, 4]``
        (x1, y1, x2, y2 normalised by the image's valid size, as the refinements take them)."""
        memory = features["memory"][row]
        shapes = features["spatial_shapes"].tolist()
        starts = features["level_start_index"].tolist()
        points = self._grid(boxes.to(torch.float32))
        levels = []
        for level, ((h, w), start) in enumerate(zip(shapes, starts)):
            # The memory's frame is the padded batch image; each image's geometry lives in its valid area.
            frame = points * features["valid_ratios"][row, level].to(points.dtype)
            grid = (frame * 2 - 1)[None]  # [1, R, G*G, 2] in grid_sample's [-1, 1]
            value = memory[start:start + h * w].transpose(0, 1).reshape(1, -1, h, w)
            sampled = F.grid_sample(value.to(grid.dtype), grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False)  # [1, C, R, G*G]
            levels.append(sampled[0].mean(-1).transpose(0, 1))
        return torch.stack(levels).mean(0)

    def forward(self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor]) -> List[torch.Tensor]:
        """``features``: the tokenizer's ``memory_features`` (``memory [B, S, C]``,
        ``spatial_shapes``, ``level_start_index``, ``valid_ratios [B, L, 2]``); ``boxes``: per image
        ``[R_b, 4]`` normalised boxes (R_b may be 0). Returns per image ``[R_b, hidden_size]``."""
        out = []
        for row, row_boxes in enumerate(boxes):
            if row_boxes.shape[0] == 0:
                out.append(self.projection.weight.new_zeros(0, self.projection.out_features))
                continue
            pooled = self.pooled(features, row, row_boxes.to(features["memory"].device))
            out.append(self.projection(pooled.to(self.projection.weight.dtype)))
        return out
