"""Projections into the LLM's input space at the scale of its word embeddings.

A fresh linear projection of image tokens comes out with a norm an order of magnitude above the
LLM's word embeddings. In the residual stream such
an input swamps everything added to it: the format-token embedding that tells a slot's fields
apart (x1 from x2) and the updates of the LLM's own layers, so every field of a slot reads out
nearly the same value. Normalising the projection's output to the RMS of the word embeddings
(learnable gain) puts image tokens and text tokens on one footing from the first step.
"""
import torch
from torch import nn


def embedding_rms(embedding_weight: torch.Tensor) -> float:
    """Root-mean-square of the entries of a word-embedding table (1.0 for meta tensors)."""
    if embedding_weight.is_meta:
        return 1.0
    return float(embedding_weight.detach().float().pow(2).mean().sqrt())


class ScaledProjection(nn.Module):
    """``Linear(in, out)`` followed by RMS normalisation with a gain initialised to ``target_rms``.

    Args:
        in_features / out_features: widths of the linear map.
        target_rms: initial RMS of the outputs (the word-embedding RMS of the LLM).
    """

    def __init__(self, in_features: int, out_features: int, target_rms: float = 1.0, eps: float = 1e-6,
                 device=None):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, device=device)
        self.gain = nn.Parameter(torch.full((out_features,), float(target_rms), device=device))
        self.eps = eps

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps) * self.gain
