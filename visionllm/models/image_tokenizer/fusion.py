"""Language-guided fusion: every visual position attends to the instruction's features."""
from typing import List

import torch
from torch import nn

from visionllm.registry import MODELS


@MODELS.register_module()
class LanguageFusion(nn.Module):
    """Per feature level, ``visual = norm(visual + CrossAttn(q=visual, k=v=text))``.

    The attention is per position (no mixing across pixels), so padded image positions cannot
    affect valid ones; padded text tokens are excluded by the key padding mask.
    """

    def __init__(self, embed_dims: int = 256, num_levels: int = 4, num_heads: int = 8, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.ModuleList(nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout, batch_first=True)
                                  for _ in range(num_levels))
        self.norm = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(num_levels))

    def forward(self, features: List[torch.Tensor], text: torch.Tensor, text_padding_mask: torch.Tensor
                ) -> List[torch.Tensor]:
        """features: list of ``[B, C, H, W]``; text ``[B, T, C]``; mask ``[B, T]`` True = padding."""
        fused = []
        for feat, attn, norm in zip(features, self.attn, self.norm):
            b, c, h, w = feat.shape
            visual = feat.flatten(2).transpose(1, 2)  # [B, HW, C]
            attended, _ = attn(visual, text, text, key_padding_mask=text_padding_mask, need_weights=False)
            visual = norm(visual + attended)
            fused.append(visual.transpose(1, 2).reshape(b, c, h, w))
        return fused
