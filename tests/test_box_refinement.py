"""Box refinement on the tokenizer memory: identity at the start, padding-exact, learns to fix boxes."""
import torch
import torch.nn.functional as F

from visionllm.models.box_refinement import BoxRefinement

EMBED = 32


def memory_of(maps: torch.Tensor, valid_hw=None) -> dict:
    """One-level memory features of maps ``[B, C, H, W]`` (valid_hw: each image's valid size)."""
    b, _, h, w = maps.shape
    valid_hw = valid_hw or [(h, w)] * b
    mask = torch.ones(b, h, w, dtype=torch.bool)
    for i, (vh, vw) in enumerate(valid_hw):
        mask[i, :vh, :vw] = False
    ratios = torch.tensor([[[vw / w, vh / h]] for vh, vw in valid_hw])
    return dict(memory=maps.flatten(2).transpose(1, 2), spatial_shapes=torch.tensor([[h, w]]),
                level_start_index=torch.tensor([0]), padding_mask=mask.flatten(1), valid_ratios=ratios)


def random_boxes(generator, shape):
    centre = 0.25 + 0.5 * torch.rand(*shape, 2, generator=generator)
    size = 0.15 + 0.3 * torch.rand(*shape, 2, generator=generator)
    return torch.cat([centre - size / 2, centre + size / 2], -1)


def test_starts_as_the_identity():
    torch.manual_seed(0)
    module = BoxRefinement(EMBED, num_levels=1, num_layers=2, ffn_dims=64)
    boxes = random_boxes(torch.Generator().manual_seed(1), (2, 5))
    steps = module(torch.randn(2, 5, EMBED), boxes, memory_of(torch.randn(2, EMBED, 12, 16)))
    assert len(steps) == 2
    for step in steps:
        assert torch.allclose(step, boxes, atol=1e-5)


def test_a_padded_image_gets_the_boxes_it_gets_alone():
    torch.manual_seed(0)
    module = BoxRefinement(EMBED, num_levels=1, num_layers=2, ffn_dims=64)
    for delta in module.deltas:
        torch.nn.init.normal_(delta[-1].weight, std=0.5)
    maps = torch.randn(1, EMBED, 10, 14)
    queries = torch.randn(1, 4, EMBED)
    boxes = random_boxes(torch.Generator().manual_seed(2), (1, 4))
    alone = module(queries, boxes, memory_of(maps))[-1]
    padded = F.pad(maps, (0, 6, 0, 5), value=3.0)  # padding with junk the mask must hide
    batch = torch.cat([padded, torch.randn(1, EMBED, 15, 20)])
    together = module(queries.repeat(2, 1, 1), boxes.repeat(2, 1, 1), memory_of(batch, [(10, 14), (15, 20)]))[-1]
    assert torch.allclose(together[0], alone[0], atol=1e-5)
    assert not torch.allclose(alone, boxes, atol=1e-3)


def _object_batch(generator, num_images, size=24):
    """Feature maps that mark one box (channel 0 inside it, channel 1 elsewhere) and a
    decoded box that is off by up to 15 % of its size on every side."""
    true = random_boxes(generator, (num_images, 1))
    ys, xs = torch.meshgrid((torch.arange(size) + 0.5) / size, (torch.arange(size) + 0.5) / size, indexing="ij")
    inside = ((xs >= true[:, 0, 0, None, None]) & (xs <= true[:, 0, 2, None, None])
              & (ys >= true[:, 0, 1, None, None]) & (ys <= true[:, 0, 3, None, None])).float()
    maps = torch.zeros(num_images, EMBED, size, size)
    maps[:, 0], maps[:, 1] = inside, 1 - inside
    wh = (true[..., 2:] - true[..., :2]).repeat(1, 1, 2)
    noisy = true + 0.15 * wh * (2 * torch.rand(true.shape, generator=generator) - 1)
    return maps, noisy, true


def test_learns_to_move_a_box_onto_the_object_in_the_features():
    torch.manual_seed(3)
    generator = torch.Generator().manual_seed(4)
    module = BoxRefinement(EMBED, num_levels=1, num_layers=2, ffn_dims=64)
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-3)
    query = torch.zeros(1, 1, EMBED)
    for _ in range(200):
        maps, noisy, true = _object_batch(generator, 16)
        steps = module(query.expand(16, -1, -1), noisy, memory_of(maps))
        loss = sum((step - true).abs().mean() for step in steps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    maps, noisy, true = _object_batch(torch.Generator().manual_seed(5), 64)
    with torch.no_grad():
        refined = module(query.expand(64, -1, -1), noisy, memory_of(maps))[-1]
    before, after = (noisy - true).abs().mean(), (refined - true).abs().mean()
    assert after < 0.6 * before, (before, after)
