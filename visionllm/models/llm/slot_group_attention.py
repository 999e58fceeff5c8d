"""Attention that skips what isolated slot groups cannot see.

A parallel slot pass reads ``[prefix][group 0]...[group N-1]``: the prefix causally, each group
the prefix and, causally, itself (``parallel_decoding``). Dense attention over that sequence
computes an ``(L + N*F)^2`` score matrix of which the ``N*F x N*F`` group block is all masked
except its N diagonal ``F x F`` blocks. Here the prefix's queries attend to the prefix only, and
the group queries to the prefix plus their own group, so the work grows with ``N*F*(L + F)``
instead of ``(N*F)^2``. The additive mask the caller built still decides what each query sees
(its prefix columns and its diagonal blocks are used as they are), so the result is the dense
attention's up to float rounding.

Registered as the LLM's attention implementation ``SLOT_GROUP_ATTENTION``; calls without a
``slot_groups`` layout (text generation, the format pass) go to PyTorch's scaled-dot-product
attention unchanged.
"""
from dataclasses import dataclass

import torch
from torch.nn import functional as F

SLOT_GROUP_ATTENTION = "visionllm_slot_groups"


@dataclass(frozen=True)
class SlotGroups:
    """Where the groups sit: queries ``[query_start:]`` and keys ``[key_start:]`` are N groups
    of ``group_len`` positions each (keys before ``key_start`` are the prefix, cached or not)."""
    query_start: int
    key_start: int
    num_groups: int
    group_len: int


def _repeat_heads(states: torch.Tensor, repeats: int) -> torch.Tensor:
    """``[B, H_kv, L, D]`` -> ``[B, H_kv * repeats, L, D]`` (grouped-query attention)."""
    return states if repeats == 1 else states.repeat_interleave(repeats, dim=1)


def _diagonal_blocks(mask: torch.Tensor, num_groups: int, group_len: int) -> torch.Tensor:
    """The N diagonal ``F x F`` blocks of a ``[B, h, N*F, N*F]`` mask: ``[B, h, N, F, F]``."""
    batch, heads = mask.shape[:2]
    blocks = mask.reshape(batch, heads, num_groups, group_len, num_groups, group_len)
    return blocks.diagonal(dim1=2, dim2=4).permute(0, 1, 4, 2, 3)


def grouped_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                      layout: SlotGroups, scaling: float) -> torch.Tensor:
    """Attention of ``query [B, H, Lq, D]`` over ``key/value [B, H, Lk, D]`` with the additive
    ``mask [B, 1 or H, Lq, Lk]``, computed per ``layout``. Returns ``[B, H, Lq, D]``."""
    q0, k0, groups, length = layout.query_start, layout.key_start, layout.num_groups, layout.group_len
    batch, heads, _, dim = query.shape
    if query.shape[2] != q0 + groups * length or key.shape[2] != k0 + groups * length:
        raise ValueError(f"slot group layout {layout} does not fit queries {query.shape[2]} / keys {key.shape[2]}")
    prefix_key, prefix_value = key[:, :, :k0], value[:, :, :k0]
    outputs = []
    if q0:  # prefix queries never see the groups (they come after them)
        outputs.append(F.scaled_dot_product_attention(query[:, :, :q0], prefix_key, prefix_value,
                                                      attn_mask=mask[:, :, :q0, :k0], scale=scaling))
    group_query = query[:, :, q0:]  # [B, H, N*F, D]
    own_query = group_query.reshape(batch, heads, groups, length, dim)
    own_key = key[:, :, k0:].reshape(batch, heads, groups, length, dim)
    own_value = value[:, :, k0:].reshape(batch, heads, groups, length, dim)
    prefix_scores = (group_query @ prefix_key.transpose(-1, -2)) * scaling + mask[:, :, q0:, :k0]
    own_scores = (own_query @ own_key.transpose(-1, -2)) * scaling + _diagonal_blocks(mask[:, :, q0:, k0:], groups, length)
    scores = torch.cat([prefix_scores.reshape(batch, heads, groups, length, k0), own_scores], dim=-1)
    # Low-precision scores are normalised in float32 (as SDPA does); float64 stays float64.
    weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)
    attended = (weights[..., :k0].reshape(batch, heads, groups * length, k0) @ prefix_value
                + (weights[..., k0:] @ own_value).reshape(batch, heads, groups * length, dim))
    outputs.append(attended)
    return torch.cat(outputs, dim=2)


def slot_group_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                                 scaling=None, slot_groups: SlotGroups = None, **kwargs):
    """The attention-interface entry point (Hugging Face calling convention: returns the output
    as ``[B, Lq, H, D]`` and no weights)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    if slot_groups is None or attention_mask is None or (dropout and module.training):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    repeats = getattr(module, "num_key_value_groups", 1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    output = grouped_attention(query, _repeat_heads(key, repeats), _repeat_heads(value, repeats),
                               attention_mask.to(query.dtype), slot_groups, scale)
    return output.transpose(1, 2).contiguous(), None


def use_slot_group_attention(backbone) -> None:
    """Make ``backbone`` (a Hugging Face decoder) attend through ``slot_group_attention_forward``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    AttentionInterface.register(SLOT_GROUP_ATTENTION, slot_group_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SLOT_GROUP_ATTENTION, sdpa_mask)
    backbone.config._attn_implementation = SLOT_GROUP_ATTENTION
