"""Box and polygon refinement on the tokenizer memory: identity at the start, padding-exact,
learn to fix what the LLM decoded."""
import pytest
import torch
import torch.nn.functional as F

from visionllm.models.refinement import BoxRefinement, PolygonRefinement

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


def box_outline(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes ``[..., 4]`` → 8-vertex polygons ``[..., 8, 2]`` (corners and edge midpoints, clockwise)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    xm, ym = (x1 + x2) / 2, (y1 + y2) / 2
    xs = torch.stack([x1, xm, x2, x2, x2, xm, x1, x1], -1)
    ys = torch.stack([y1, y1, y1, ym, y2, y2, y2, ym], -1)
    return torch.stack([xs, ys], -1)


# (module class, geometry maker): boxes [B, N, 4], polygons [B, N, 8, 2]
KINDS = {"box": (BoxRefinement, random_boxes),
         "polygon": (PolygonRefinement, lambda generator, shape: box_outline(random_boxes(generator, shape)))}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_starts_as_the_identity(kind):
    module_class, make = KINDS[kind]
    torch.manual_seed(0)
    module = module_class(EMBED, num_levels=1, num_layers=2, ffn_dims=64)
    module.init_weights()  # the starting values the model's init_weights gives
    geometry = make(torch.Generator().manual_seed(1), (2, 5))
    steps = module(torch.randn(2, 5, EMBED), geometry, memory_of(torch.randn(2, EMBED, 12, 16)))
    assert len(steps) == 2
    for step in steps:
        assert step.shape == geometry.shape
        assert torch.allclose(step, geometry, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_padded_image_gets_the_geometry_it_gets_alone(kind):
    module_class, make = KINDS[kind]
    torch.manual_seed(0)
    module = module_class(EMBED, num_levels=1, num_layers=2, ffn_dims=64)
    module.init_weights()  # the starting values the model's init_weights gives
    for delta in module.deltas:
        torch.nn.init.normal_(delta[-1].weight, std=0.5)
    maps = torch.randn(1, EMBED, 10, 14)
    queries = torch.randn(1, 4, EMBED)
    geometry = make(torch.Generator().manual_seed(2), (1, 4))
    alone = module(queries, geometry, memory_of(maps))[-1]
    padded = F.pad(maps, (0, 6, 0, 5), value=3.0)  # padding with junk the mask must hide
    batch = torch.cat([padded, torch.randn(1, EMBED, 15, 20)])
    repeat = (2,) + (1,) * (geometry.dim() - 1)
    together = module(queries.repeat(2, 1, 1), geometry.repeat(*repeat), memory_of(batch, [(10, 14), (15, 20)]))[-1]
    assert torch.allclose(together[0], alone[0], atol=1e-5)
    assert not torch.allclose(alone, geometry, atol=1e-3)


def test_each_polygon_is_refined_on_its_own():
    """A polygon's vertices attend to each other, never to another slot's polygon."""
    torch.manual_seed(0)
    module = PolygonRefinement(EMBED, num_levels=1, num_layers=2, ffn_dims=64)
    module.init_weights()  # the starting values the model's init_weights gives
    for delta in module.deltas:
        torch.nn.init.normal_(delta[-1].weight, std=0.5)
    memory = memory_of(torch.randn(1, EMBED, 12, 12))
    queries = torch.randn(1, 3, EMBED)
    polygons = KINDS["polygon"][1](torch.Generator().manual_seed(6), (1, 3))
    moved = polygons.clone()
    moved[0, 2] = moved[0, 2].flip(0) * 0.5 + 0.2  # another slot's polygon changes completely
    first = module(queries, polygons, memory)[-1]
    second = module(queries, moved, memory)[-1]
    assert torch.allclose(first[0, :2], second[0, :2], atol=1e-6)
    assert not torch.allclose(first[0, 2], second[0, 2], atol=1e-3)


def _object_batch(generator, num_images, size=24, kind="box"):
    """Feature maps that mark one box (channel 0 inside it, channel 1 elsewhere), and the box
    (or its 8-vertex outline) as decoded: every coordinate off by up to 15 % of the box's size."""
    true = random_boxes(generator, (num_images, 1))
    ys, xs = torch.meshgrid((torch.arange(size) + 0.5) / size, (torch.arange(size) + 0.5) / size, indexing="ij")
    inside = ((xs >= true[:, 0, 0, None, None]) & (xs <= true[:, 0, 2, None, None])
              & (ys >= true[:, 0, 1, None, None]) & (ys <= true[:, 0, 3, None, None])).float()
    maps = torch.zeros(num_images, EMBED, size, size)
    maps[:, 0], maps[:, 1] = inside, 1 - inside
    wh = true[..., 2:] - true[..., :2]
    if kind == "polygon":
        true, wh = box_outline(true), wh[:, :, None]
    else:
        wh = wh.repeat(1, 1, 2)
    noisy = true + 0.15 * wh * (2 * torch.rand(true.shape, generator=generator) - 1)
    return maps, noisy, true


# A polygon's 8 vertices each find the outline on their own, so they learn slower than a box.
ITERATIONS = {"box": 200, "polygon": 500}


def _train_and_measure(kind, maps_scale=1.0):
    """Train on fresh batches; mean error of noisy and refined geometry on new ones."""
    torch.manual_seed(3)
    generator = torch.Generator().manual_seed(4)
    module = KINDS[kind][0](EMBED, num_levels=1, num_layers=2, ffn_dims=64)
    module.init_weights()  # the starting values the model's init_weights gives
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-3)
    query = torch.zeros(1, 1, EMBED)
    for _ in range(ITERATIONS[kind]):
        maps, noisy, true = _object_batch(generator, 16, kind=kind)
        steps = module(query.expand(16, -1, -1), noisy, memory_of(maps * maps_scale))
        loss = sum((step - true).abs().mean() for step in steps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    maps, noisy, true = _object_batch(torch.Generator().manual_seed(5), 64, kind=kind)
    with torch.no_grad():
        refined = module(query.expand(64, -1, -1), noisy, memory_of(maps * maps_scale))[-1]
    return (noisy - true).abs().mean(), (refined - true).abs().mean()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_learns_to_move_the_geometry_onto_the_object_in_the_features(kind):
    before, after = _train_and_measure(kind)
    assert after < 0.65 * before, (before, after)


def test_the_polygon_refinement_reads_the_features_not_a_prior():
    """With the object erased from the features the vertices cannot be placed better than a
    mean shape would: the gain above comes from sampling the memory."""
    before, after = _train_and_measure("polygon", maps_scale=0.0)
    assert after > 0.8 * before, (before, after)


def _segment_distance(p, a, b):
    """Distance of point p to segment ab, plain float64 arithmetic."""
    abx, aby = b[0] - a[0], b[1] - a[1]
    length2 = abx * abx + aby * aby
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((p[0] - a[0]) * abx + (p[1] - a[1]) * aby) / length2))
    dx, dy = p[0] - (a[0] + t * abx), p[1] - (a[1] + t * aby)
    return (dx * dx + dy * dy) ** 0.5


def _outline_distance_loop(pred, target, per_edge):
    def dense(polygon):
        k = len(polygon)
        return [[polygon[i][c] + s / per_edge * (polygon[(i + 1) % k][c] - polygon[i][c]) for c in range(2)]
                for i in range(k) for s in range(per_edge)]

    def one_way(points, polygon):
        k = len(polygon)
        return sum(min(_segment_distance(p, polygon[i], polygon[(i + 1) % k]) for i in range(k))
                   for p in points) / len(points)

    return (one_way(dense(pred), target) + one_way(dense(target), pred)) / 2


def test_outline_distance_matches_a_float64_loop_and_has_its_gradient():
    from visionllm.models.refinement import outline_distance

    generator = torch.Generator().manual_seed(7)
    pred = torch.rand(4, 6, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    target = torch.rand(4, 9, 2, generator=generator, dtype=torch.float64)  # vertex counts may differ
    ours = outline_distance(pred, target, per_edge=3)
    reference = [_outline_distance_loop(pred[i].tolist(), target[i].tolist(), 3) for i in range(4)]
    assert torch.allclose(ours, torch.tensor(reference, dtype=torch.float64), atol=1e-12)
    assert torch.autograd.gradcheck(lambda p: outline_distance(p, target, per_edge=3), (pred,))


def test_outline_distance_ignores_where_the_vertices_start_but_not_a_shift():
    from visionllm.models.refinement import outline_distance

    square = box_outline(torch.tensor([[0.2, 0.3, 0.6, 0.7]], dtype=torch.float64))
    assert outline_distance(square.roll(3, dims=1), square).abs().max() < 1e-12
    assert outline_distance(square.flip(1), square).abs().max() < 1e-12  # the other way round
    shifted = square + torch.tensor([0.01, 0.0], dtype=torch.float64)
    # a shift by d along x: the two vertical edges are d away, the horizontal ones 0 to d
    assert 0.004 < float(outline_distance(shifted, square)) < 0.01
