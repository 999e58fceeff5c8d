"""Extended vocabulary and LoRA: new rows train, the base vocabulary and base weights never move."""
import torch
import pytest
from tiny_llm import save_tiny_llama

from visionllm.models.llm.llm_loader import apply_lora, load_causal_lm
from visionllm.models.llm.vocabulary import (ExtendedEmbedding, ExtendedLMHead, SpecialTokens,
                                             extend_vocabulary)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_special_token_names_and_counts():
    special = SpecialTokens(num_bins=9, num_classes=3, max_points=4)
    assert special.location_tokens[0] == "<p-4>" and special.location_tokens[-1] == "<p4>"
    assert special.location_tokens[4] == "<p0>"
    assert special.class_tokens == ["<c0>", "<c1>", "<c2>"]
    assert special.no_object == "<c_none>"
    assert special.format_tokens[:5] == ["<cls>", "<x1>", "<y1>", "<x2>", "<y2>"]
    assert special.field_token("y4") == "<y4>"
    with pytest.raises(KeyError):
        special.field_token("x5")
    assert len(special) == 9 + 3 + 1 + 9 and len(set(special.all_tokens)) == len(special)
    default = SpecialTokens()
    assert default.location_tokens[0] == "<p-512>" and default.location_tokens[-1] == "<p512>"
    assert len(default.class_tokens) == 512 and len(default.format_tokens) == 49


@pytest.mark.parametrize("tie", [True, False])
def test_extension_keeps_base_frozen_and_trains_new_rows(tmp_path, smollm2_tokenizer_dir, tie):
    directory = save_tiny_llama(tmp_path / "m", smollm2_tokenizer_dir, tie=tie, seed=3)
    model, tokenizer = load_causal_lm(directory)
    base_vocab = len(tokenizer)
    ids = torch.randint(0, base_vocab, (2, 7))
    hidden_probe = torch.randn(3, model.config.hidden_size)
    before_embed = model.get_input_embeddings()(ids).clone()
    before_logits = model.get_output_embeddings()(hidden_probe).clone()

    model = apply_lora(model, rank=2, alpha=4, dropout=0.0)
    special = SpecialTokens(num_bins=17, num_classes=5, max_points=3)
    token_ids = extend_vocabulary(model, tokenizer, special)
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert isinstance(embedding, ExtendedEmbedding) and isinstance(head, ExtendedLMHead)
    assert sorted(token_ids.values()) == list(range(base_vocab, base_vocab + len(special)))
    # The tokenizer keeps a new token whole and maps it to the new rows.
    assert tokenizer("<p-3><c4><x2>", add_special_tokens=False)["input_ids"] == \
        [token_ids["<p-3>"], token_ids["<c4>"], token_ids["<x2>"]]
    # Base ids embed and score exactly as before.
    assert torch.equal(embedding(ids), before_embed)
    assert torch.equal(head(hidden_probe)[:, :base_vocab], before_logits)
    assert (head.new_weight is embedding.new_weight) == tie
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "new_weight" in n for n in trainable)
    assert any("new_weight" in n for n in trainable) and any("lora_" in n for n in trainable)

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    new_rows = embedding.new_weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    new_ids = torch.tensor([[token_ids["<p0>"], token_ids["<c1>"], 5, token_ids["<y3>"]]])
    out = model(input_ids=new_ids, labels=new_ids)
    out.loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, frozen[name]), f"frozen {name} moved"
    assert not torch.equal(embedding.new_weight, new_rows), "new rows did not train"
    assert all(not p.requires_grad for n, p in model.named_parameters() if "base_weight" in n)


def test_subset_logits_equal_full_logits_columns(tiny_llama_dir):
    model, tokenizer = load_causal_lm(tiny_llama_dir)
    extend_vocabulary(model, tokenizer, SpecialTokens(num_bins=9, num_classes=4, max_points=2))
    head = model.get_output_embeddings()
    hidden = torch.randn(5, model.config.hidden_size)
    ids = torch.cat([torch.randint(0, len(tokenizer) - 10, (6,)), torch.arange(len(tokenizer) - 8, len(tokenizer))])
    assert torch.allclose(head.subset_logits(hidden, ids), head(hidden)[:, ids], atol=1e-5)
