"""A direct read-out of the image tokens inside every LLM decoder layer.

Structured outputs are bound to image tokens (each slot starts from one), but free text is not:
a caption or an answer reaches the image only through the LLM's own self-attention, which the
LoRA adapters must bend from pretrained text habits, and a few image tokens among many text
positions get little of its attention (docs/experiments.md has the measurements).

``ImageReadout`` adds after decoder layer l a cross-attention from every position to the image
tokens: ``h <- h + W_out attn(q(h), k(T), v(T))`` with fresh (not LoRA) projections and a learned
null key/value, so a position can also read "nothing here" and the share of attention left on
the real tokens grows with how many match (counting). ``W_out`` starts at zero: the model is
unchanged until the read-out learns something (``init_weights``).
"""
from contextlib import contextmanager
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from visionllm.registry import MODELS


class ImageCrossAttention(nn.Module):
    """Multi-head attention of ``[B, L, C]`` hidden states over ``[B, M, C]`` image tokens plus a
    learned null token, projected back to the hidden width by a zero-initialised map."""

    def __init__(self, hidden_size: int, dims: int = 128, num_heads: int = 4, device=None):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f"read-out width {dims} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.query_norm = nn.RMSNorm(hidden_size, device=device)
        self.token_norm = nn.RMSNorm(hidden_size, device=device)
        self.query = nn.Linear(hidden_size, dims, bias=False, device=device)
        self.key = nn.Linear(hidden_size, dims, bias=False, device=device)
        self.value = nn.Linear(hidden_size, dims, bias=False, device=device)
        self.null_key = nn.Parameter(torch.zeros(dims, device=device))
        self.null_value = nn.Parameter(torch.zeros(dims, device=device))
        self.out = nn.Linear(dims, hidden_size, bias=False, device=device)

    def init_weights(self) -> None:
        """The output map starts at zero: the layer adds nothing until it is trained."""
        if not self.out.weight.is_meta:
            nn.init.zeros_(self.out.weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dims = x.shape
        return x.view(batch, length, self.num_heads, dims // self.num_heads).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, _ = hidden.shape
        tokens = self.token_norm(tokens.to(hidden.dtype))
        keys = torch.cat([self.key(tokens), self.null_key.expand(batch, 1, -1)], dim=1)
        values = torch.cat([self.value(tokens), self.null_value.expand(batch, 1, -1)], dim=1)
        read = F.scaled_dot_product_attention(self._heads(self.query(self.query_norm(hidden))),
                                              self._heads(keys), self._heads(values))
        return self.out(read.transpose(1, 2).reshape(batch, length, -1))


@MODELS.register_module()
class ImageReadout(nn.Module):
    """One :class:`ImageCrossAttention` per decoder layer, applied by forward hooks on the layers
    while image tokens are attached (:meth:`attached`); outside that the layers are untouched.

    Args:
        layers: the LLM's decoder layers (each returns the hidden states, or a tuple led by them).
        hidden_size: the LLM width.
        dims / num_heads: width and heads of each read-out.
    """

    def __init__(self, layers: nn.ModuleList, hidden_size: int, dims: int = 128, num_heads: int = 4,
                 device=None):
        super().__init__()
        self.blocks = nn.ModuleList(ImageCrossAttention(hidden_size, dims, num_heads, device=device)
                                    for _ in layers)
        self._tokens: Optional[torch.Tensor] = None
        for layer, block in zip(layers, self.blocks):
            layer.register_forward_hook(partial(self._after_layer, block))

    def init_weights(self) -> None:
        """Every read-out starts at zero: the decoder layers are unchanged until it is trained."""
        for block in self.blocks:
            block.init_weights()

    def _after_layer(self, block: ImageCrossAttention, module, args, output):
        if self._tokens is None:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        tokens = self._tokens
        if tokens.shape[0] != hidden.shape[0]:  # beam search repeats every row num_beams times
            if hidden.shape[0] % tokens.shape[0]:
                raise ValueError(f"{hidden.shape[0]} sequences for {tokens.shape[0]} images")
            tokens = tokens.repeat_interleave(hidden.shape[0] // tokens.shape[0], dim=0)
        hidden = hidden + block(hidden, tokens)
        return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden

    @contextmanager
    def attached(self, tokens: torch.Tensor):
        """Within the block, every decoder layer reads ``tokens [B, M, C]`` (row b of the batch
        reads image b)."""
        previous, self._tokens = self._tokens, tokens
        try:
            yield
        finally:
            self._tokens = previous
