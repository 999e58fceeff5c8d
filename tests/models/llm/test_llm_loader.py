"""LLM loading: local HF directories, layer truncation, and the Alpaca-7B config on `meta`."""
import pytest
import torch
from tiny_llm import save_tiny_llama

from visionllm.models.llm.llm_loader import ALPACA_7B_CONFIG, lora_parameter_count, load_causal_lm
from visionllm.models.llm.vocabulary import SpecialTokens

pytestmark = pytest.mark.usefixtures("single_thread")


def test_local_hf_directory_loads_the_saved_weights(tmp_path, smollm2_tokenizer_dir):
    from transformers import LlamaForCausalLM
    directory = save_tiny_llama(tmp_path / "ckpt", smollm2_tokenizer_dir, tie=False, seed=int(torch.randint(0, 1000, ())))
    reference = LlamaForCausalLM.from_pretrained(directory).eval()
    model, tokenizer = load_causal_lm(directory)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    ids = torch.randint(0, len(tokenizer), (2, 9))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    truncated, _ = load_causal_lm(directory, num_layers=1)
    assert len(truncated.model.layers) == 1 and truncated.config.num_hidden_layers == 1
    assert torch.equal(truncated.model.layers[0].self_attn.q_proj.weight, reference.model.layers[0].self_attn.q_proj.weight)
    with pytest.raises(FileNotFoundError):
        load_causal_lm(str(tmp_path / "missing"))


def test_alpaca_7b_with_lora_builds_on_meta_and_counts_trainable_parameters():
    from visionllm.models.llm.task_decoder import LLMTaskDecoder  # noqa: F401
    from visionllm.registry import MODELS
    rank = 8
    # The decoder's own parts only: the optional image read-out and refinements are counted by
    # the paper-config tests.
    decoder = MODELS.build(dict(type="LLMTaskDecoder", llm=dict(source="meta"),
                                lora=dict(rank=rank, alpha=16, dropout=0.05),
                                image_readout=None, box_refinement=None, polygon_refinement=None))
    assert decoder.hidden_size == 4096 and all(p.device.type == "meta" for p in decoder.parameters())
    assert len(decoder.llm.model.layers) == 32
    hidden, layers = ALPACA_7B_CONFIG["hidden_size"], ALPACA_7B_CONFIG["num_hidden_layers"]
    num_new = len(SpecialTokens())  # 1025 locations + 512 classes + no-object + 49 format tokens
    assert num_new == 1587
    expected = (lora_parameter_count(hidden, layers, rank)          # q, k, v, o adapters
                + 2 * num_new * hidden                              # new input rows + new output rows (untied)
                + hidden * hidden + 2 * hidden                      # slot projection (weight, bias, RMS gain)
                + 2 * 64 * hidden)                                  # class pointer (query, key at rank 64)
    count = decoder.num_trainable_parameters()
    print(f"Alpaca-7B + LoRA(r={rank}) trainable parameters: {count:,} "
          f"of {sum(p.numel() for p in decoder.parameters()):,}")
    assert count == expected
    assert lora_parameter_count(hidden, layers, rank) == 32 * 4 * rank * (4096 + 4096)
    # The base vocabulary is frozen and untouched in size.
    assert decoder.embed_tokens.base_weight.shape == (32000, 4096) and not decoder.embed_tokens.base_weight.requires_grad
