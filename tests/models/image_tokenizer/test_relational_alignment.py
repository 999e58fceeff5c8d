"""Relational name alignment: starts as the plain alignment, learns relations a per-token score cannot."""
import pytest
import torch

from visionllm.models.image_tokenizer.relational_alignment import RelationalAlignment
from visionllm.registry import MODELS

from test_image_tokenizer import build, make_sample, tiny_config

EMBED = 32


def test_starts_as_the_plain_alignment_and_only_refines_it():
    torch.manual_seed(0)
    relational = build(tiny_config(relational_alignment=dict(type="RelationalAlignment", num_layers=1))).eval()
    plain = build(tiny_config(relational_alignment=None)).eval()
    assert plain.relational_alignment is None
    missing = plain.load_state_dict(relational.state_dict(), strict=False).unexpected_keys
    assert missing and all(key.startswith("relational_alignment.") for key in missing)
    images = torch.randn(2, 3, 64, 64)
    samples = [make_sample(64, 64, [[4, 4, 20, 20]], categories=["the cat on the left", "dog"]),
               make_sample(64, 64, [[30, 30, 60, 50]], categories=["bird"])]
    texts = ["Find the cat on the left or a dog in <image>.", "Find the bird in <image>."]
    with torch.no_grad():
        outputs = relational(images, None, texts)
        refined = relational.token_name_logits(outputs, samples)
        assert all(torch.equal(a, b) for a, b in zip(refined, plain.token_name_logits(outputs, samples)))
        # once trained, the correction depends on where the other tokens are
        torch.nn.init.normal_(relational.relational_alignment.out[1].weight)
        names = relational.name_embeddings(["the cat on the left"])
        tokens, points = outputs["embeds"][0], outputs["reference_points"][0]
        moved = points.clone()
        moved[1:] = moved[1:].flip(0)
        before = relational.name_logits(tokens, names, points)[0]
        after = relational.name_logits(tokens, names, moved)[0]
        # token 0 kept its own point; only the others moved
        assert not torch.allclose(before, after)
        assert torch.equal(relational.name_logits(tokens, names), plain.name_logits(tokens, names))


def test_optional_parts_are_registry_components():
    with pytest.raises(KeyError, match="unknown model component type 'NoSuchAlignment'"):
        MODELS.build(tiny_config(relational_alignment=dict(type="NoSuchAlignment")))
    with pytest.raises(ValueError, match=r"dict\(type=...\) or None"):
        MODELS.build(tiny_config(token_appearance=True))


def _relational_batch(generator, num_images, num_tokens=8):
    """Images with two equally likely candidates (same features and plain logit) for a name that
    means "the left one" or "the right one"; the target is the candidate that fits."""
    tokens = torch.randn(num_images, num_tokens, EMBED, generator=generator)
    points = torch.rand(num_images, num_tokens, 2, generator=generator)
    logits = torch.full((num_images, num_tokens, 1), -6.0)
    logits[:, :2] = 4.0
    tokens[:, 1] = tokens[:, 0]
    # separate the two candidates horizontally by at least 0.1
    gap = 0.1 + 0.3 * torch.rand(num_images, generator=generator)
    points[:, 1, 0] = (points[:, 0, 0] + gap * torch.where(points[:, 0, 0] < 0.5, 1.0, -1.0)).clamp(0, 1)
    wants_left = torch.rand(num_images, generator=generator) < 0.5
    left = torch.where(points[:, 0, 0] < points[:, 1, 0], 0, 1)
    target = torch.where(wants_left, left, 1 - left)
    return tokens, points, logits, wants_left, target


def test_learns_which_candidate_a_relative_name_means():
    # Sigmoid targets per token: the left square must score 1 and the right one 0 wherever the
    # pair lies. No per-token score of absolute position does that for more than ~3/4 of pairs;
    # comparing with the other candidate does it for all (self-attention alone took ~200 steps
    # to get there, the candidate mass on each side ~40).
    torch.manual_seed(1)
    generator = torch.Generator().manual_seed(2)
    module = RelationalAlignment(EMBED, num_layers=2, num_heads=4, ffn_dims=64)
    module.init_weights()
    # "the square on the left" / "... on the right": the same pooled vector, one word apart
    pooled = torch.randn(1, EMBED)
    words = torch.stack([torch.stack([pooled[0], torch.randn(EMBED)]) for _ in range(2)])  # [2 names, 2 words, C]
    padding = torch.zeros(2, 2, dtype=torch.bool)
    optimizer = torch.optim.Adam(module.parameters(), lr=4e-3)

    def refined(tokens, points, logits, wants_left):
        sides = module.side_weights(pooled.expand(2, -1), words, padding)
        return torch.stack([module(t, p, pooled, l, sides[0 if w else 1][None])[:, 0]
                            for t, p, l, w in zip(tokens, points, logits, wants_left)])

    for _ in range(80):
        tokens, points, logits, wants_left, target = _relational_batch(generator, 16)
        out = refined(tokens, points, logits, wants_left)
        labels = torch.zeros_like(out)
        labels[torch.arange(len(target)), target] = 1.0
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokens, points, logits, wants_left, target = _relational_batch(torch.Generator().manual_seed(3), 200)
    with torch.no_grad():
        probs = refined(tokens, points, logits, wants_left).sigmoid()
    rows = torch.arange(len(target))
    both_right = (probs[rows, target] > 0.5) & (probs[rows, 1 - target] < 0.5)
    assert both_right.float().mean() > 0.9, both_right.float().mean()


def test_candidate_mass_on_each_side_matches_a_loop_reference():
    torch.manual_seed(4)
    module = RelationalAlignment(EMBED, num_layers=1, side_temperature=0.05)
    module.init_weights()
    points, logits = torch.rand(6, 2), torch.randn(6, 3) * 3
    around = module.candidates_around(points, logits)
    expected = torch.zeros(3, 6, 5, dtype=torch.float64)
    p, mass = points.double(), logits.double().sigmoid()
    for n in range(3):
        for i in range(6):
            for j in range(6):
                if i == j:
                    continue
                dx, dy = (p[j] - p[i]) / 0.05
                sides = torch.stack([(-dx).sigmoid(), dx.sigmoid(), (-dy).sigmoid(), dy.sigmoid(), dx.new_tensor(1.0)])
                expected[n, i] += mass[j, n] * sides
    assert torch.allclose(around.double(), expected, atol=1e-5)
    # a token far left of every other candidate has (almost) none of their mass on its left
    points = torch.tensor([[0.1, 0.5], [0.6, 0.5], [0.9, 0.5]])
    around = module.candidates_around(points, torch.full((3, 1), 8.0))
    assert around[0, 0, 0] < 1e-3 and around[0, 0, 1] > 1.99
