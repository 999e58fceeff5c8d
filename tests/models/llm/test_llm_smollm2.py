"""The embedded SmolLM2-135M-Instruct GGUF as the task decoder's LLM (one load per session)."""
import pytest
import torch

from visionllm.models.llm.parallel_decoding import parallel_forward

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]  # the real 135M LLM


@pytest.fixture(scope="module")
def smollm2_decoder(single_thread):
    from visionllm.models.llm.task_decoder import LLMTaskDecoder
    torch.manual_seed(0)
    # A standalone decoder: no image tokenizer memory for the refinements to read.
    return LLMTaskDecoder(llm=dict(source="smollm2"), lora=dict(rank=4, alpha=8, dropout=0.0),
                          box_refinement=None, polygon_refinement=None).eval()


def test_extended_smollm2_still_answers_chat_prompts(smollm2_decoder):
    decoder = smollm2_decoder
    assert decoder.hidden_size == 576 and len(decoder.backbone.layers) == 30
    assert decoder.embed_tokens.num_base == 49152 and decoder.head.new_weight is decoder.embed_tokens.new_weight
    tokenizer = decoder.tokenizer
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    # LoRA starts as the identity and the base vocabulary is untouched, so the model is unchanged.
    with torch.no_grad():
        out = decoder.llm.generate(input_ids=ids, max_new_tokens=12, do_sample=False,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
                                   suppress_tokens=decoder.new_token_ids)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_chat_prompt_assembly_places_image_tokens(smollm2_decoder):
    decoder = smollm2_decoder
    before, after = decoder.prompt.encode('Detect {"cat": <c0>} in <image>. Answer as (c, x1, y1, x2, y2).')
    text_before = decoder.tokenizer.decode(before)
    assert text_before.startswith("<|im_start|>system") and text_before.endswith("Detect {\"cat\": <c0>} in ")
    assert decoder.tokenizer.decode(after).endswith("<|im_start|>assistant\n")
    assert decoder.field_ids["cls"] in decoder.tokenizer("<cls>", add_special_tokens=False)["input_ids"]
    images = torch.randn(2, 7, decoder.hidden_size)
    batch = decoder._assemble([decoder._prompt_segments("<image> Describe.", images[0]),
                               decoder._prompt_segments("A longer instruction about <image> here.", images[1])])
    n0 = len(sum(decoder.prompt.encode("<image> Describe."), []))
    # Left padding: sample 0's real tokens end at the last column, its image tokens after its prefix.
    start = batch.embeds.shape[1] - (n0 + 7) + len(decoder.prompt.encode("<image> Describe.")[0])
    assert torch.equal(batch.embeds[0, start:start + 7], images[0])
    assert batch.valid[0].sum() == n0 + 7 and batch.valid[1].all()


def test_real_weights_keep_slot_groups_isolated(smollm2_decoder):
    decoder = smollm2_decoder
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    images = torch.randn(1, 6, decoder.hidden_size, generator=g) * 0.05
    fields = ("cls", "x1", "y1", "x2", "y2")
    with torch.no_grad():
        prefix = decoder._structured_prefix(images, ['Detect {"cat": <c0>} in <image>. Answer as (c, x1, y1, x2, y2).'], fields)
        groups = decoder._group_embeds(images, fields)
        _, out = parallel_forward(decoder.backbone, prefix, groups)
        changed = groups.clone()
        changed[:, 3] += torch.randn(changed[:, 3].shape, generator=g) * 0.05
        _, out2 = parallel_forward(decoder.backbone, prefix, changed)
    assert torch.equal(out[:, [0, 1, 2, 4, 5]], out2[:, [0, 1, 2, 4, 5]])
    assert not torch.allclose(out[:, 3], out2[:, 3])
