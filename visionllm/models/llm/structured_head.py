"""The structured head: slot queries in, field logits out.

Every slot group reads its fields over the allowed token subsets of the LLM's output layer: the
class field over ``<c0>..<c{n-1}>`` and no-object, each coordinate field over the location bins.
Two optional terms join the class logits: the ``ClassPointer`` score between the slot and the
prompt's hidden state at each class token, and a prior per image token and category (the image
tokenizer's name alignment) for the slot bound to that token.
"""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .prompt import SequenceBatch


@dataclass
class SlotLogits:
    """Field logits of the N slots of one image.

    cls: ``[N, n+1]`` over the image's n categories, last = no-object.
    loc: ``[N, F-1, bins]`` over the location bins, one row per coordinate field.
    """
    cls: torch.Tensor
    loc: torch.Tensor


def slot_queries(embed_tokens: nn.Module, slot_proj: nn.Module, image_embeds: torch.Tensor,
                 field_ids: torch.Tensor, num_slots: int) -> torch.Tensor:
    """``[B, N, F, C]`` queries: format-token embedding + slot embedding of image token i."""
    formats = embed_tokens(field_ids)  # [F, C]
    slots = slot_proj(image_embeds[:, :num_slots])  # [B, N, C]
    return slots.unsqueeze(2) + formats.view(1, 1, len(field_ids), -1)


def field_logits(lm_head: nn.Module, group_hidden: torch.Tensor, class_ids: torch.Tensor, no_object_id: int,
                 location_ids: torch.Tensor, num_categories: int, class_pointer: Optional[nn.Module] = None,
                 class_context: Optional[torch.Tensor] = None,
                 class_prior: Optional[torch.Tensor] = None) -> SlotLogits:
    """Field logits of one image's slot groups ``group_hidden [N, F, C]``.

    ``class_context [n, C]``: the prompt's hidden states at its class tokens (see
    ``class_context``), scored against each slot by ``class_pointer``. ``class_prior [M, n]``:
    logits of each image token for each category, added to the slot bound to the token.
    """
    allowed = torch.cat([class_ids[:num_categories], class_ids.new_tensor([no_object_id])])
    cls_logits = lm_head.subset_logits(group_hidden[:, 0], allowed)
    extra = 0
    if class_pointer is not None and class_context is not None:
        extra = extra + class_pointer(group_hidden[:, 0], class_context)
    if class_prior is not None:
        extra = extra + class_prior[:group_hidden.shape[0]].to(cls_logits.dtype)
    if num_categories and torch.is_tensor(extra):
        cls_logits = torch.cat([cls_logits[:, :num_categories] + extra, cls_logits[:, num_categories:]], dim=1)
    return SlotLogits(cls_logits, lm_head.subset_logits(group_hidden[:, 1:], location_ids))


def class_context(prefix_hidden: torch.Tensor, prefix: SequenceBatch, row: int, class_ids: torch.Tensor,
                  num_categories: int) -> torch.Tensor:
    """``[n, C]`` hidden states of the prompt at the first ``<c0>..<c{n-1}>`` tokens of row
    ``row`` (zeros for a class token the prompt does not contain)."""
    ids = prefix.input_ids[row]
    context = prefix_hidden.new_zeros(num_categories, prefix_hidden.shape[-1])
    for i in range(num_categories):
        where = (ids == class_ids[i]).nonzero()
        if len(where):
            context[i] = prefix_hidden[row, int(where[0])]
    return context
