"""Class logits that point at the category named in the instruction.

Class tokens ``<c0>..<c{n-1}>`` carry no meaning of their own: ``<ci>`` is "the i-th category
named in this instruction". The prompt's hidden state at ``<ci>`` has read that name, so a slot
can score each class by comparing itself with those states, as open-vocabulary detectors score
regions against text embeddings, instead of learning the binding through fixed output rows.
"""
import math

import torch
from torch import nn


def _rms_normalise(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class ClassPointer(nn.Module):
    """Scaled dot product between slot states and the prompt's class-token states.

    ``score[s, i] = <A norm(slot_s), B norm(context_i)> / sqrt(rank)``. Both inputs are RMS
    normalised first: LLM hidden states have norms in the tens, and an unnormalised bilinear form
    under Adam makes the logits explode in the first steps. ``B`` starts at zero, so the scores
    start at zero and the class logits at the plain token readout.

    Args:
        width: hidden size of the LLM.
        rank: width of the comparison space.
    """

    def __init__(self, width: int, rank: int = 64, device=None):
        super().__init__()
        self.query = nn.Linear(width, rank, bias=False, device=device)
        self.key = nn.Linear(width, rank, bias=False, device=device)
        self.scale = 1.0 / math.sqrt(rank)

    def init_weights(self) -> None:
        """``B`` starts at zero (meta tensors are left alone); the model's ``init_weights`` calls this."""
        if not self.key.weight.is_meta:
            nn.init.zeros_(self.key.weight)

    def forward(self, slots: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """slots ``[N, C]``, context ``[n, C]`` → scores ``[N, n]``."""
        return self.query(_rms_normalise(slots)) @ self.key(_rms_normalise(context)).t() * self.scale
