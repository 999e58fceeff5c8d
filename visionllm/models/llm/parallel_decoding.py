"""Output-format-as-query decoding: N slot groups of F query positions in ONE forward pass.

Layout of a sequence: ``[left padding][prompt with image tokens][format tokens][group 0]...[group N-1]``.
Group i holds F positions, one per output field, whose inputs are the format-token embeddings plus
a slot embedding from image token i. A 4-D additive mask lets every group see the whole prefix
(prompt + format) and, causally, itself; optionally also every other group. All groups share the
position ids ``P .. P+F-1`` (P = real prefix length), so their order carries no information.

The autoregressive baseline feeds the same query positions one at a time through a KV cache with
the equivalent mask, so it produces the same outputs (exactly, with isolated groups) and its
latency is that of token-by-token structured decoding.
"""
from typing import Callable, Tuple

import torch
from torch import nn

from .prompt import SequenceBatch
from .slot_group_attention import SlotGroups


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def prefix_allowed(valid: torch.Tensor) -> torch.Tensor:
    """``[B, L, L]`` causal attention over real tokens; padded query rows see only themselves
    (a fully masked row would make SDPA return NaN)."""
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    allowed = causal.unsqueeze(0) & valid.unsqueeze(1)
    return allowed | torch.eye(length, dtype=torch.bool, device=valid.device).unsqueeze(0)


def group_allowed(num_groups: int, group_len: int, groups_see_each_other: bool,
                  device=None) -> torch.Tensor:
    """``[N*F, N*F]`` attention among the group positions: causal within a group; across groups
    either nothing (isolated) or everything."""
    group = torch.arange(num_groups, device=device).repeat_interleave(group_len)
    field = torch.arange(group_len, device=device).repeat(num_groups)
    same = group.unsqueeze(1) == group.unsqueeze(0)
    allowed = same & (field.unsqueeze(0) <= field.unsqueeze(1))
    if groups_see_each_other:
        allowed = allowed | ~same
    return allowed


def block_attention_mask(valid: torch.Tensor, num_groups: int, group_len: int,
                         groups_see_each_other: bool = False,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask ``[B, 1, L + N*F, L + N*F]`` for the prefix followed by the slot groups."""
    batch, length = valid.shape
    num_query = num_groups * group_len
    total = length + num_query
    allowed = torch.zeros(batch, total, total, dtype=torch.bool, device=valid.device)
    allowed[:, :length, :length] = prefix_allowed(valid)
    allowed[:, length:, :length] = valid.unsqueeze(1)
    allowed[:, length:, length:] = group_allowed(num_groups, group_len, groups_see_each_other, valid.device)
    return additive_mask(allowed, dtype).unsqueeze(1)


def group_position_ids(prefix: SequenceBatch, num_groups: int, group_len: int) -> torch.Tensor:
    """``[B, N*F]``: field f of every group sits at position P + f."""
    field = torch.arange(group_len, device=prefix.valid.device).repeat(num_groups)
    return prefix.lengths.unsqueeze(1) + field.unsqueeze(0)


def parallel_forward(backbone: nn.Module, prefix: SequenceBatch, group_embeds: torch.Tensor,
                     groups_see_each_other: bool = False, cache=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One forward pass of prefix + all groups.

    Args:
        backbone: the decoder stack (HF ``LlamaModel``: accepts inputs_embeds, a 4-D mask and
            position ids; returns final-normed hidden states).
        group_embeds: ``[B, N, F, C]`` query inputs.
        cache: an empty ``DynamicCache`` that receives the keys and values of prefix and groups
            (``cache.crop(-N * F)`` keeps the prefix's for a continuation), or None.
    Returns:
        ``(prefix_hidden [B, L, C], group_hidden [B, N, F, C])``.
    """
    batch, num_groups, group_len, width = group_embeds.shape
    length = prefix.embeds.shape[1]
    embeds = torch.cat([prefix.embeds, group_embeds.reshape(batch, -1, width)], dim=1)
    mask = block_attention_mask(prefix.valid, num_groups, group_len, groups_see_each_other,
                                embeds.dtype)
    positions = torch.cat([prefix.position_ids, group_position_ids(prefix, num_groups, group_len)], dim=1)
    # Isolated groups tell a slot-group attention (if the backbone has one) what it may skip.
    layout = None if groups_see_each_other else SlotGroups(length, length, num_groups, group_len)
    hidden = backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                      past_key_values=cache, use_cache=cache is not None, slot_groups=layout).last_hidden_state
    return hidden[:, :length], hidden[:, length:].reshape(batch, num_groups, group_len, width)


def cached_parallel_forward(backbone: nn.Module, prefix: SequenceBatch, cache, tail_embeds: torch.Tensor,
                            group_embeds: torch.Tensor, groups_see_each_other: bool = False) -> torch.Tensor:
    """The groups of ``parallel_forward`` after a prefix whose keys and values are cached.

    ``cache`` holds the keys and values of ``prefix`` (a ``DynamicCache``, extended in place);
    ``tail_embeds [B, T, C]`` are tokens still to be read causally after the prefix (e.g. the end
    of the format), then the groups ``[B, N, F, C]`` see prefix and tail. Positions continue
    from the real prefix length, so the result equals ``parallel_forward`` over
    ``prefix + tail`` up to float rounding. Returns ``group_hidden [B, N, F, C]``.
    """
    batch, num_groups, group_len, width = group_embeds.shape
    length, tail = prefix.embeds.shape[1], tail_embeds.shape[1]
    num_query = tail + num_groups * group_len
    device = group_embeds.device
    allowed = torch.zeros(batch, num_query, length + num_query, dtype=torch.bool, device=device)
    allowed[:, :, :length] = prefix.valid.unsqueeze(1)
    allowed[:, :tail, length:length + tail] = torch.ones(tail, tail, dtype=torch.bool, device=device).tril()
    allowed[:, tail:, length:length + tail] = True
    allowed[:, tail:, length + tail:] = group_allowed(num_groups, group_len, groups_see_each_other, device)
    start = prefix.lengths.unsqueeze(1)
    positions = torch.cat([start + torch.arange(tail, device=device).unsqueeze(0),
                           start + tail + torch.arange(group_len, device=device).repeat(num_groups).unsqueeze(0)], dim=1)
    embeds = torch.cat([tail_embeds, group_embeds.reshape(batch, -1, width)], dim=1)
    layout = None if groups_see_each_other else SlotGroups(tail, length + tail, num_groups, group_len)
    hidden = backbone(inputs_embeds=embeds, attention_mask=additive_mask(allowed, embeds.dtype).unsqueeze(1),
                      position_ids=positions, past_key_values=cache, use_cache=True,
                      slot_groups=layout).last_hidden_state
    return hidden[:, tail:].reshape(batch, num_groups, group_len, width)


def crop_cache(cache, length: int) -> None:
    """Keep the first ``length`` positions of a ``DynamicCache``."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


# The second LLM call of a pruned pass pays for itself only when many positions can go: on CPU
# (tools/benchmark_inference.py --prompt-cache) boxes (16 slots x 4 positions after the class)
# were slower pruned, 16-point polygons (16 x 32) about twice as fast.
PRUNING_MIN_POSITIONS = 256


def worth_pruning(num_groups: int, group_len: int) -> bool:
    """Whether finishing only some groups (``pruned_parallel_forward``) can save more than its
    second call costs: the positions after the groups' first fields are many."""
    return num_groups * (group_len - 1) >= PRUNING_MIN_POSITIONS


def pruned_parallel_forward(backbone: nn.Module, prefix: SequenceBatch, group_embeds: torch.Tensor, cache,
                            keep: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``parallel_forward`` that finishes only the groups worth finishing.

    A group's first field sees only the prefix and itself, so a first pass over prefix + every
    group's first field gives exactly what the full pass gives there; ``keep(prefix_hidden
    [B, L, C], first_hidden [B, N, C])`` then returns ``[B, N]`` bool, and a continuation of the
    prefix's cache reads all fields of the kept groups only. Dropped groups keep their first
    field's state; their other fields are zeros (never to be read). ``cache``: an empty
    ``DynamicCache``, left holding the prefix's keys and values. Returns what
    ``parallel_forward`` returns, up to float rounding for the kept groups.
    """
    batch, num_groups, group_len, width = group_embeds.shape
    length = prefix.embeds.shape[1]
    prefix_hidden, first = parallel_forward(backbone, prefix, group_embeds[:, :, :1], cache=cache)
    crop_cache(cache, length)
    group_hidden = first.new_zeros(batch, num_groups, group_len, width)
    group_hidden[:, :, :1] = first
    kept = keep(prefix_hidden, first[:, :, 0])
    count = int(kept.sum(1).max()) if num_groups else 0
    if count == 0 or group_len == 1:
        return prefix_hidden, group_hidden
    # Each row's kept groups first (rows with fewer fill up with dropped ones, not written back).
    order = torch.sort(kept.int(), dim=1, descending=True, stable=True).indices[:, :count]
    chosen = group_embeds.gather(1, order[:, :, None, None].expand(-1, -1, group_len, width))
    no_tail = group_embeds.new_zeros(batch, 0, width)
    finished = cached_parallel_forward(backbone, prefix, cache, no_tail, chosen)
    crop_cache(cache, length)
    rows, slots = kept.gather(1, order).nonzero(as_tuple=True)
    group_hidden[rows, order[rows, slots]] = finished[rows, slots]
    return prefix_hidden, group_hidden


@torch.no_grad()
def autoregressive_forward(backbone: nn.Module, prefix: SequenceBatch, group_embeds: torch.Tensor,
                           groups_see_each_other: bool = False, return_prefix: bool = False):
    """The same group outputs decoded one position at a time with a KV cache (baseline).

    With ``groups_see_each_other`` a group sees only the groups decoded before it (a sequence
    cannot look ahead), so outputs then differ from the parallel pass; isolated groups match it.
    ``return_prefix`` also returns the prefix hidden states: ``(prefix_hidden, outputs)``.
    """
    from transformers import DynamicCache
    batch, num_groups, group_len, width = group_embeds.shape
    length = prefix.embeds.shape[1]
    cache = DynamicCache(config=getattr(backbone, "config", None))
    prefix_hidden = backbone(inputs_embeds=prefix.embeds,
             attention_mask=additive_mask(prefix_allowed(prefix.valid), prefix.embeds.dtype).unsqueeze(1),
             position_ids=prefix.position_ids, past_key_values=cache, use_cache=True).last_hidden_state
    dtype, device = group_embeds.dtype, group_embeds.device
    total = length + num_groups * group_len
    # keys_allowed[b, k]: which cached keys the current step may see; grown step by step.
    keys_allowed = torch.zeros(batch, total, dtype=torch.bool, device=device)
    keys_allowed[:, :length] = prefix.valid
    outputs = torch.empty(batch, num_groups, group_len, width, dtype=dtype, device=device)
    step = length
    for g in range(num_groups):
        group_start = step
        for f in range(group_len):
            keys_allowed[:, step] = True
            mask = additive_mask(keys_allowed[:, :step + 1], dtype)[:, None, None, :]
            positions = (prefix.lengths + f).unsqueeze(1)
            out = backbone(inputs_embeds=group_embeds[:, g, f:f + 1], attention_mask=mask,
                           position_ids=positions, past_key_values=cache, use_cache=True)
            outputs[:, g, f] = out.last_hidden_state[:, 0]
            step += 1
        if not groups_see_each_other:
            keys_allowed[:, group_start:step] = False
    return (prefix_hidden, outputs) if return_prefix else outputs
