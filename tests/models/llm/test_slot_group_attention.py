"""Slot-group attention: the dense attention's result with the skipped blocks never computed."""
import copy

import pytest
import torch
from transformers import DynamicCache

from visionllm.models.llm import slot_group_attention as sga
from visionllm.models.llm.llm_loader import load_causal_lm
from visionllm.models.llm.parallel_decoding import (additive_mask, block_attention_mask, cached_parallel_forward,
                                                    group_allowed, parallel_forward)
from visionllm.models.llm.prompt import SequenceBatch

pytestmark = pytest.mark.usefixtures("single_thread")


def dense_reference(query, key, value, mask, scaling):
    """Plain softmax attention over every key (float64 in, float64 out)."""
    weights = torch.softmax(query @ key.transpose(-1, -2) * scaling + mask, dim=-1)
    return weights @ value


def random_padded_prefix(lengths, width, generator, dtype=torch.float64):
    total = max(lengths)
    valid = torch.zeros(len(lengths), total, dtype=torch.bool)
    for b, n in enumerate(lengths):
        valid[b, total - n:] = True
    embeds = torch.randn(len(lengths), total, width, generator=generator, dtype=dtype)
    return SequenceBatch(embeds, valid, torch.full(valid.shape, -100))


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_grouped_attention_equals_dense_attention_with_gradients(dtype, tolerance):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    heads, dim, groups, length = 3, 8, 5, 4
    valid = random_padded_prefix([9, 6], 1, g).valid
    mask64 = block_attention_mask(valid, groups, length, dtype=torch.float64)
    total = mask64.shape[-1]
    inputs = [torch.randn(2, heads, total, dim, generator=g, dtype=torch.float64) for _ in range(3)]
    layout = sga.SlotGroups(valid.shape[1], valid.shape[1], groups, length)

    low = [x.to(dtype).clone().requires_grad_() for x in inputs]
    ours = sga.grouped_attention(*low, mask64.to(dtype), layout, dim ** -0.5)
    ref_in = [x.clone().requires_grad_() for x in inputs]
    reference = dense_reference(*ref_in, mask64, dim ** -0.5)
    upstream = torch.randn(reference.shape, generator=g, dtype=torch.float64)
    (ours.double() * upstream).sum().backward()
    (reference * upstream).sum().backward()
    scale = reference.abs().max()
    assert (ours.double() - reference).abs().max() <= tolerance * scale
    for mine, theirs in zip(low, ref_in):
        assert (mine.grad.double() - theirs.grad).abs().max() <= tolerance * theirs.grad.abs().max()


def test_grouped_attention_after_a_cache_sees_cache_tail_and_own_group():
    """Queries = a causal tail then the groups; keys = cache + tail + groups (a continuation)."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    cached, tail, groups, length, dim = 7, 3, 4, 3, 8
    allowed = torch.zeros(1, tail + groups * length, cached + tail + groups * length, dtype=torch.bool)
    allowed[:, :, :cached] = True
    allowed[:, :tail, cached:cached + tail] = torch.ones(tail, tail, dtype=torch.bool).tril()
    allowed[:, tail:, cached:cached + tail] = True
    allowed[:, tail:, cached + tail:] = group_allowed(groups, length, False)
    mask = additive_mask(allowed, torch.float64).unsqueeze(1)
    query = torch.randn(1, 2, allowed.shape[1], dim, generator=g, dtype=torch.float64)
    key, value = (torch.randn(1, 2, allowed.shape[2], dim, generator=g, dtype=torch.float64) for _ in range(2))
    ours = sga.grouped_attention(query, key, value, mask, sga.SlotGroups(tail, cached + tail, groups, length), 0.3)
    assert torch.allclose(ours, dense_reference(query, key, value, mask, 0.3), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="does not fit"):
        sga.grouped_attention(query, key, value, mask, sga.SlotGroups(tail, cached, groups, length), 0.3)


@pytest.fixture(scope="module")
def backbones(tiny_llama_dir):
    """The tiny random Llama twice in float64: PyTorch's SDPA, and the slot-group attention."""
    model, _ = load_causal_lm(tiny_llama_dir)
    dense = model.model.double().eval()
    grouped = copy.deepcopy(dense)
    sga.use_slot_group_attention(grouped)
    assert dense.config._attn_implementation == "sdpa"
    return dense, grouped


def test_slot_passes_match_dense_attention_and_take_the_grouped_path(backbones, monkeypatch):
    dense, grouped = backbones
    calls = []
    original = sga.grouped_attention
    monkeypatch.setattr(sga, "grouped_attention", lambda *args: calls.append(args[4]) or original(*args))
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    width = dense.config.hidden_size
    prefix = random_padded_prefix([9, 5], width, g)
    groups = torch.randn(2, 6, 4, width, generator=g, dtype=torch.float64)
    with torch.no_grad():
        dense_prefix, dense_groups = parallel_forward(dense, prefix, groups)
        grouped_prefix, grouped_groups = parallel_forward(grouped, prefix, groups)
    assert len(calls) == dense.config.num_hidden_layers
    assert calls[0] == sga.SlotGroups(9, 9, 6, 4)
    assert torch.allclose(grouped_prefix, dense_prefix, atol=1e-10, rtol=0)
    assert torch.allclose(grouped_groups, dense_groups, atol=1e-10, rtol=0)

    # A continuation: the prefix cached, a tail read causally, then the groups.
    tail = torch.randn(2, 2, width, generator=g, dtype=torch.float64)
    outputs = []
    for backbone in (dense, grouped):
        cache = DynamicCache(config=backbone.config)
        with torch.no_grad():
            backbone(inputs_embeds=prefix.embeds, attention_mask=block_attention_mask(prefix.valid, 0, 0,
                     dtype=torch.float64), position_ids=prefix.position_ids, past_key_values=cache, use_cache=True)
            outputs.append(cached_parallel_forward(backbone, prefix, cache, tail, groups))
    assert calls[-1] == sga.SlotGroups(2, 11, 6, 4)
    assert torch.allclose(outputs[1], outputs[0], atol=1e-10, rtol=0)


def test_calls_without_groups_are_plain_sdpa(backbones, monkeypatch):
    """Text generation and the format pass carry no layout: the grouped path is not taken."""
    _, grouped = backbones
    monkeypatch.setattr(sga, "grouped_attention", lambda *args: pytest.fail("grouped path taken"))
    prefix = random_padded_prefix([4], grouped.config.hidden_size, torch.Generator().manual_seed(0))
    with torch.no_grad():
        grouped(inputs_embeds=prefix.embeds, position_ids=prefix.position_ids)
