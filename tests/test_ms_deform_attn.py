"""Multi-scale deformable attention: compiled CPU kernel vs the grid_sample reference, gradients,
thread-count independence, input checks, the transformers implementation as an independent oracle,
and the MSDeformAttn module.

Every test draws fresh random inputs; the seed is printed (pytest shows it on failure) so a failing
draw can be replayed with ``MSDA_SEED=<seed>``.
"""
import os
import random

import pytest
import torch

import custom_ops
from custom_ops._extension import load_extension
from custom_ops.ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_reference
from custom_ops.ms_deform_attn import function as msda_function
from custom_ops.ms_deform_attn.function import MSDeformAttnFunction


@pytest.fixture
def seed():
    value = int(os.environ.get("MSDA_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(value)
    print(f"MSDA_SEED={value}")
    return value


@pytest.fixture(scope="module")
def ext():
    module = load_extension("custom_ops.ms_deform_attn._C")
    assert module is not None, "custom_ops.ms_deform_attn._C is not built: run `make ops` first"
    return module


def level_table(shapes):
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index, int(sizes.sum())


def make_inputs(batch, queries, heads, channels, shapes, points, dtype, outside=0.25, requires_grad=False):
    """Random op inputs; about `outside` of the coordinates fall outside [0, 1] (partly or wholly
    off the map), the rest inside."""
    spatial_shapes, level_start_index, spatial = level_table(shapes)
    levels = len(shapes)
    value = torch.randn(batch, spatial, heads, channels, dtype=dtype)
    locations = torch.rand(batch, queries, heads, levels, points, 2, dtype=dtype)
    off_map = torch.rand(locations.shape) < outside
    locations = torch.where(off_map, locations * 1.8 - 0.4, locations)
    weights = torch.rand(batch, queries, heads, levels, points, dtype=dtype)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    if requires_grad:
        for t in (value, locations, weights):
            t.requires_grad_(True)
    return value, spatial_shapes, level_start_index, locations, weights


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


# (batch, queries, heads, channels, level shapes (H, W), points)
CASES = [
    (1, 7, 1, 1, [(5, 3)], 1),                          # single level, one channel
    (2, 11, 2, 3, [(6, 4), (3, 2)], 2),                 # non-square levels
    (3, 9, 4, 30, [(7, 5), (4, 3), (2, 2)], 4),
    (2, 13, 2, 64, [(8, 8), (4, 4), (2, 2), (1, 1)], 4),  # includes a 1x1 level
    (1, 17, 3, 71, [(3, 9), (9, 3)], 3),                # channel count with a vector tail
]
CASE_IDS = [f"B{c[0]}-D{c[3]}-L{len(c[4])}" for c in CASES]


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_matches_reference(ext, seed, case, dtype, tolerance):
    batch, queries, heads, channels, shapes, points = case
    inputs = make_inputs(batch, queries, heads, channels, shapes, points, dtype)
    ours = ext.forward(*inputs)
    reference = ms_deform_attn_reference(*inputs)
    assert ours.shape == (batch, queries, heads * channels) and ours.dtype == dtype
    assert rel_err(ours, reference) < tolerance


@pytest.mark.parametrize("case", CASES[1:4], ids=CASE_IDS[1:4])
def test_backward_matches_reference(ext, seed, case):
    batch, queries, heads, channels, shapes, points = case
    value, shapes_t, starts, locations, weights = make_inputs(batch, queries, heads, channels, shapes, points,
                                                              torch.float64)
    grad_out = torch.randn(batch, queries, heads * channels, dtype=torch.float64)
    grads = []
    for op in (ms_deform_attn, ms_deform_attn_reference):
        leaves = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
        op(leaves[0], shapes_t, starts, leaves[1], leaves[2]).backward(grad_out)
        grads.append([t.grad for t in leaves])
    for name, ours, reference in zip(("value", "locations", "weights"), *grads):
        assert rel_err(ours, reference) < 1e-10, name


@pytest.mark.parametrize("channels", [19, 32])
@pytest.mark.parametrize("isa", ["baseline", "avx2", "native"])
def test_every_cpu_code_path_matches_reference(ext, seed, monkeypatch, isa, channels):
    """The CPU loops are compiled for baseline x86-64, AVX2 and AVX-512 (picked at run time), each
    for any D and for D = 32 fixed at compile time; VISIONLLM_MSDA_CPU_ISA lowers the ISA choice
    so every compiled copy is checked here."""
    if isa != "native":
        monkeypatch.setenv("VISIONLLM_MSDA_CPU_ISA", isa)
    value, shapes, starts, locations, weights = make_inputs(2, 10, 3, channels, [(6, 5), (3, 4)], 3, torch.float64)
    grad_out = torch.randn(2, 10, 3 * channels, dtype=torch.float64)
    assert rel_err(ext.forward(value, shapes, starts, locations, weights),
                   ms_deform_attn_reference(value, shapes, starts, locations, weights)) < 1e-10
    leaves = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
    ms_deform_attn_reference(leaves[0], shapes, starts, leaves[1], leaves[2]).backward(grad_out)
    ours = ext.backward(value, shapes, starts, locations, weights, grad_out)
    for name, a, leaf in zip(("value", "locations", "weights"), ours, leaves):
        assert rel_err(a, leaf.grad) < 1e-10, name


def test_gradcheck_float64(ext, seed):
    value, shapes, starts, locations, weights = make_inputs(
        2, 5, 2, 3, [(4, 5), (3, 2)], 2, torch.float64, outside=0.3, requires_grad=True)
    with torch.no_grad():  # bilinear sampling has kinks on the pixel grid: keep finite differences off them
        size = shapes.flip(-1).to(torch.float64)[:, None, :]  # [L, 1, 2] as (W, H)
        pixel = locations * size - 0.5
        distance = (pixel - pixel.round()).abs()
        locations += torch.where(distance < 1e-3, 5e-3 / size, torch.zeros_like(pixel))

    def op(v, loc, w):
        return MSDeformAttnFunction.apply(v, shapes, starts, loc, w)

    assert torch.autograd.gradcheck(op, (value, locations, weights), eps=1e-6, atol=1e-7)


def test_points_off_the_map_give_zero(ext, seed):
    value, shapes, starts, locations, weights = make_inputs(2, 6, 2, 5, [(4, 4), (2, 3)], 2, torch.float64,
                                                            requires_grad=True)
    with torch.no_grad():  # pixel coordinates <= -1 or >= size: all four corners are padding
        locations.copy_(torch.where(torch.rand(locations.shape) < 0.5, -0.6 - locations, 1.6 + locations))
    out = ms_deform_attn(value, shapes, starts, locations, weights)
    out.backward(torch.randn_like(out))
    assert torch.count_nonzero(out) == 0
    for grad in (value.grad, locations.grad, weights.grad):
        assert torch.count_nonzero(grad) == 0


def test_same_result_with_one_and_two_threads(ext, seed):
    inputs = make_inputs(2, 64, 4, 32, [(16, 12), (8, 6), (4, 3)], 4, torch.float32)
    grad_out = torch.randn(2, 64, 4 * 32)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append((ext.forward(*inputs), *ext.backward(*inputs, grad_out)))
    finally:
        torch.set_num_threads(previous)
    for one, two in zip(*results):
        assert torch.equal(one, two)  # bitwise: each output is accumulated in a fixed order


def test_input_errors(ext, seed):
    good = make_inputs(2, 5, 2, 4, [(3, 4), (2, 2)], 2, torch.float32)
    value, shapes, starts, locations, weights = good

    def raises(match, *args):
        with pytest.raises(RuntimeError, match=match):
            ext.forward(*args)
        with pytest.raises(RuntimeError, match=match):
            ms_deform_attn(*args)

    raises("value .* must have 4 dimensions", value[0], shapes, starts, locations, weights)
    raises("sampling_locations .* must have 6 dimensions", value, shapes, starts, locations[..., 0], weights)
    raises("attention_weights must be", value, shapes, starts, locations, weights[:, :, :, :, :1].contiguous())
    raises("sampling_locations must be", value, shapes, starts, locations[:, :, :1].contiguous(), weights)
    raises("levels", value, shapes[:1], starts[:1], locations, weights)
    raises("does not fit in value", value[:, :-1].contiguous(), shapes, starts, locations, weights)
    raises("share one dtype", value, shapes, starts, locations.double(), weights)
    raises("float32 or float64", value.half(), shapes, starts, locations.half(), weights.half())
    raises("float32 or float64", value.long(), shapes, starts, locations.long(), weights.long())
    raises("int64", value, shapes.int(), starts, locations, weights)
    raises("contiguous", value.transpose(2, 3).contiguous().transpose(2, 3), shapes, starts, locations, weights)
    raises("contiguous", value, shapes, starts, locations.transpose(1, 2).contiguous().transpose(1, 2), weights)
    raises("one device", value, shapes, starts, locations.to("meta"), weights)
    with pytest.raises(RuntimeError, match="grad_output must be"):
        ext.backward(*good, torch.zeros(2, 5, 7))


def test_matches_transformers_implementation(ext, seed):
    """Independent oracle: the pure-PyTorch op inside transformers' Deformable DETR."""
    from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention

    shapes_list = [(10, 7), (5, 4), (3, 2), (2, 1)]
    value, shapes, starts, locations, weights = make_inputs(2, 40, 8, 32, shapes_list, 4, torch.float32)
    theirs = MultiScaleDeformableAttention()(value, shapes, shapes_list, starts, locations, weights, im2col_step=64)
    ours = ms_deform_attn(value, shapes, starts, locations, weights)
    assert ours.shape == theirs.shape
    assert rel_err(ours, theirs) < 1e-5


def test_backend_switch_and_fallback(ext, seed, monkeypatch):
    inputs = make_inputs(1, 4, 2, 3, [(3, 3)], 2, torch.float64, requires_grad=True)
    assert isinstance(ms_deform_attn(*inputs).grad_fn, MSDeformAttnFunction._backward_cls)
    custom_ops.set_backend("reference")
    try:
        out = ms_deform_attn(*inputs)
    finally:
        custom_ops.set_backend(None)
    assert not isinstance(out.grad_fn, MSDeformAttnFunction._backward_cls)
    assert rel_err(out, ext.forward(*[t.detach() for t in inputs])) < 1e-10
    # Extension missing (load_extension returned None): the reference is used.
    monkeypatch.setattr(msda_function, "_extension", lambda: None)
    out = ms_deform_attn(*inputs)
    assert not isinstance(out.grad_fn, MSDeformAttnFunction._backward_cls)


def module_inputs(batch, queries, embed_dims, shapes_list, box_refs, dtype=torch.float64):
    shapes, starts, spatial = level_table(shapes_list)
    levels = len(shapes_list)
    query = torch.randn(batch, queries, embed_dims, dtype=dtype)
    value = torch.randn(batch, spatial, embed_dims, dtype=dtype, requires_grad=True)
    refs = torch.rand(batch, queries, levels, 4 if box_refs else 2, dtype=dtype)
    if box_refs:
        refs[..., 2:] = refs[..., 2:] * 0.5 + 0.05
    mask = torch.rand(batch, spatial) < 0.3
    return query, refs, value, shapes, starts, mask


@pytest.mark.parametrize("box_refs", [False, True], ids=["ref2d", "ref4d"])
def test_module_compiled_equals_reference(ext, seed, box_refs):
    module = MSDeformAttn(embed_dims=32, num_levels=3, num_heads=4, num_points=3).double()
    with torch.no_grad():  # move away from the symmetric init so every path carries signal
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    query, refs, value, shapes, starts, mask = module_inputs(2, 9, 32, [(6, 5), (3, 3), (2, 1)], box_refs)
    grad_out = torch.randn(2, 9, 32, dtype=torch.float64)

    results = []
    for backend in ("compiled", "reference"):
        custom_ops.set_backend(backend)
        try:
            module.zero_grad()
            value.grad = None
            out = module(query, refs, value, shapes, starts, mask)
            out.backward(grad_out)
        finally:
            custom_ops.set_backend(None)
        results.append((out.detach(), value.grad.clone(), {n: p.grad.clone() for n, p in module.named_parameters()}))
    (out_c, gv_c, gp_c), (out_r, gv_r, gp_r) = results
    assert out_c.shape == (2, 9, 32)
    assert rel_err(out_c, out_r) < 1e-10
    assert rel_err(gv_c, gv_r) < 1e-10
    for name in gp_c:
        assert rel_err(gp_c[name], gp_r[name]) < 1e-9, name
    # Padded positions are zeroed after the value projection: they get no gradient.
    assert torch.count_nonzero(gv_c[mask]) == 0


def test_module_padding_mask_hides_padded_values(ext, seed):
    module = MSDeformAttn(embed_dims=16, num_levels=2, num_heads=2, num_points=2)
    query, refs, value, shapes, starts, mask = module_inputs(2, 6, 16, [(5, 4), (3, 2)], False, torch.float32)
    value = value.detach()
    out = module(query, refs, value, shapes, starts, mask)
    changed = value.clone()
    changed[mask] += 100.0 * torch.randn_like(changed[mask])
    assert torch.allclose(module(query, refs, changed, shapes, starts, mask), out, atol=1e-6)
    assert not torch.allclose(module(query, refs, changed, shapes, starts, None), out, atol=1e-3)


def test_module_init_follows_deformable_detr():
    module = MSDeformAttn(embed_dims=64, num_levels=2, num_heads=4, num_points=3)
    bias = module.sampling_offsets.bias.view(4, 2, 3, 2)
    # Head 0 looks right, head 1 (90 degrees) down; the k-th point k pixels out, on every level.
    assert torch.allclose(bias[0, :, :, 0], torch.tensor([1.0, 2.0, 3.0]).expand(2, 3))
    assert torch.allclose(bias[1, :, :, 1], torch.tensor([1.0, 2.0, 3.0]).expand(2, 3))
    assert torch.count_nonzero(module.sampling_offsets.weight) == 0
    assert torch.count_nonzero(module.attention_weights.weight) == 0
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(embed_dims=30, num_heads=8)
