"""The image read-out of the LLM decoder layers (visionllm/models/llm/image_readout.py)."""
import pytest
import torch
from tiny_llm import build_decoder, make_sample

from visionllm.models.llm.image_readout import ImageCrossAttention

pytestmark = pytest.mark.usefixtures("single_thread")
READOUT = dict(type="ImageReadout", dims=16, num_heads=2)


def fresh_generator():
    return torch.Generator().manual_seed(torch.seed() % 2**31)


def reference_cross_attention(block: ImageCrossAttention, hidden, tokens):
    """The read-out written out head by head with explicit softmax over [tokens; null]."""
    def rms(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps) * weight

    q = rms(hidden, block.query_norm.weight) @ block.query.weight.T
    t = rms(tokens, block.token_norm.weight)
    k = torch.cat([t @ block.key.weight.T, block.null_key.expand(len(t), 1, -1)], dim=1)
    v = torch.cat([t @ block.value.weight.T, block.null_value.expand(len(t), 1, -1)], dim=1)
    d = q.shape[-1] // block.num_heads
    heads = []
    for h in range(block.num_heads):
        sl = slice(h * d, (h + 1) * d)
        weights = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / d ** 0.5, dim=-1)
        heads.append(weights @ v[..., sl])
    return torch.cat(heads, dim=-1) @ block.out.weight.T


def randomised_block(g, hidden_size=24, dims=12, heads=3):
    block = ImageCrossAttention(hidden_size, dims, heads).double()
    with torch.no_grad():
        for param in block.parameters():
            param.copy_(torch.randn(param.shape, generator=g, dtype=torch.float64) * 0.5 + (param.dim() == 1))
    return block


def test_cross_attention_matches_the_reference_with_gradients():
    g = fresh_generator()
    block = randomised_block(g)
    hidden = torch.randn(2, 5, 24, generator=g, dtype=torch.float64, requires_grad=True)
    tokens = torch.randn(2, 7, 24, generator=g, dtype=torch.float64, requires_grad=True)
    ours = block(hidden, tokens)
    reference = reference_cross_attention(block, hidden, tokens)
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-10)
    weights = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    inputs = (hidden, tokens) + tuple(block.parameters())
    ours_grads = torch.autograd.grad((ours * weights).sum(), inputs)
    reference_grads = torch.autograd.grad((reference_cross_attention(block, hidden, tokens) * weights).sum(), inputs)
    for a, b in zip(ours_grads, reference_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_null_token_lets_the_read_share_grow_with_the_number_of_matches():
    """With identical matching tokens, softmax over tokens alone reads the same value whatever
    their number; the null token makes the read proportional to the share of matches."""
    block = ImageCrossAttention(8, dims=8, num_heads=1).double()
    with torch.no_grad():
        for lin in (block.query, block.key, block.value, block.out):
            lin.weight.copy_(torch.eye(8, dtype=torch.float64) * 3)
    hidden = torch.zeros(1, 1, 8, dtype=torch.float64)
    hidden[..., 0] = 1.0
    match, other = torch.zeros(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    match[0], other[1] = 1.0, 1.0
    reads = [block(hidden, torch.stack([match] * n + [other] * (4 - n)).unsqueeze(0))[0, 0, 0].item()
             for n in range(1, 5)]
    assert all(a < b for a, b in zip(reads, reads[1:])), reads


def text_batch(g):
    samples = [make_sample("caption", "<image> Describe the image.", target_text="a red circle"),
               make_sample("vqa", "<image> how many squares are there?", target_text="2")]
    return torch.randn(2, 4, 64, generator=g), samples


def test_zero_initialised_readout_leaves_the_decoder_unchanged(tiny_llama_dir):
    plain = build_decoder(tiny_llama_dir, image_readout=None).eval()
    assert plain.image_readout is None
    reading = build_decoder(tiny_llama_dir, image_readout=READOUT).eval()
    missing, unexpected = reading.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("image_readout.") for key in missing)
    embeds, samples = text_batch(fresh_generator())
    with torch.no_grad():
        torch.testing.assert_close(reading._text_loss(embeds, samples), plain._text_loss(embeds, samples))
    texts = ["<image> Describe the image.", "<image> how many squares are there?"]
    assert reading.generate_text(embeds, texts, max_new_tokens=5) == plain.generate_text(embeds, texts, max_new_tokens=5)


def test_readout_trains_and_reads_the_image_only_while_attached(tiny_llama_dir):
    decoder = build_decoder(tiny_llama_dir, image_readout=READOUT)
    g = fresh_generator()
    embeds, samples = text_batch(g)
    decoder._text_loss(embeds, samples).backward()
    grads = {name: p.grad for name, p in decoder.image_readout.named_parameters()}
    # At zero init only the output maps (and nothing upstream of them) receive gradient.
    assert all(grads[f"blocks.{i}.out.weight"].abs().sum() > 0 for i in range(2))
    with torch.no_grad():
        for block in decoder.image_readout.blocks:
            block.out.weight.normal_(0, 1.0, generator=g)
    decoder.eval()
    ids = torch.randint(0, 1000, (2, 6), generator=g)
    inputs = decoder.embed_tokens(ids).detach()
    other = torch.randn(embeds.shape, generator=g)
    with torch.no_grad():
        detached = decoder.backbone(inputs_embeds=inputs).last_hidden_state
        with decoder._reading(embeds):
            own = decoder.backbone(inputs_embeds=inputs).last_hidden_state
            with decoder._reading(other):
                nested = decoder.backbone(inputs_embeds=inputs).last_hidden_state
            restored = decoder.backbone(inputs_embeds=inputs).last_hidden_state
        after = decoder.backbone(inputs_embeds=inputs).last_hidden_state
    # The text positions contain no image token, so only the read-out carries the image.
    assert not torch.allclose(own, detached) and not torch.allclose(own, nested)
    torch.testing.assert_close(restored, own)
    torch.testing.assert_close(after, detached)


def test_beam_search_rows_read_their_own_image(tiny_llama_dir):
    decoder = build_decoder(tiny_llama_dir, image_readout=READOUT).eval()
    g = fresh_generator()
    with torch.no_grad():
        for block in decoder.image_readout.blocks:
            block.out.weight.normal_(0, 1.0, generator=g)
    tokens = torch.randn(2, 4, 64, generator=g)
    inputs = torch.randn(4, 3, 64, generator=g)
    with torch.no_grad():
        with decoder._reading(tokens):  # rows 0,1 are image 0's beams, rows 2,3 image 1's
            beams = decoder.backbone(inputs_embeds=inputs).last_hidden_state
        with decoder._reading(tokens.repeat_interleave(2, dim=0)):
            explicit = decoder.backbone(inputs_embeds=inputs).last_hidden_state
        torch.testing.assert_close(beams, explicit)
        with pytest.raises(ValueError, match="sequences for"):
            with decoder._reading(tokens[:1].expand(3, -1, -1)):
                decoder.backbone(inputs_embeds=inputs)
        assert len(decoder.generate_text(tokens, ["<image> Describe.", "<image> Count."], max_new_tokens=3,
                                         num_beams=2)) == 2


def test_readout_weights_are_saved_with_the_trainable_state(tiny_llama_dir):
    decoder = build_decoder(tiny_llama_dir, image_readout=READOUT).eval()
    g = fresh_generator()
    with torch.no_grad():
        for param in decoder.image_readout.parameters():
            param.normal_(0, 0.5, generator=g)
    state = decoder.trainable_state_dict()
    assert any(key.startswith("image_readout.blocks.1.") for key in state)
    restored = build_decoder(tiny_llama_dir, image_readout=READOUT).eval()
    restored.load_trainable_state_dict(state)
    embeds, samples = text_batch(g)
    with torch.no_grad():
        torch.testing.assert_close(restored._text_loss(embeds, samples), decoder._text_loss(embeds, samples))


def test_readout_width_must_split_into_heads():
    with pytest.raises(ValueError, match="not divisible"):
        ImageCrossAttention(32, dims=10, num_heads=4)
