"""Multi-scale deformable attention: compiled CPU kernel vs the grid_sample reference, gradients,
thread-count independence, input checks, the transformers implementation as an independent oracle,
float16 / bfloat16 / float32 against float64 (tolerances in op_precision.py), and the MSDeformAttn
module (also under bfloat16 autocast).

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
from op_precision import REDUCED_DTYPES, assert_within, low_precision_sum, max_error, tolerance, unit_roundoff


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


# ----------------------------------------------------------------------------------------------
# float16 / bfloat16 / float32 against float64
# ----------------------------------------------------------------------------------------------
# Many levels and points: 64 samples per (query, head), so 256-term sums in the output, and 48
# queries x 64 samples landing on small maps, so long sums in the value gradient.
WIDE = (1, 48, 2, 32, [(16, 12), (8, 6), (4, 3), (2, 2)], 16)
DTYPE_CASES = [CASES[1], CASES[4], WIDE]
DTYPE_CASE_IDS = [CASE_IDS[1], CASE_IDS[4], "wide-L4-P16"]


def away_from_cell_edges(locations, shapes, dtype=torch.float64):
    """Locations in ``dtype`` none of whose pixel coordinates lies within 1e-3 of an integer
    (a bilinear cell edge): those are moved by a third of a pixel before rounding.

    The location gradient jumps where a sample crosses into the next cell, so at an edge the
    kernel and the float64 reference may take either one-sided derivative. A 16-bit location has
    few mantissa bits and lands exactly on an edge often, so the check is made after rounding.
    """
    size = shapes.flip(-1).to(torch.float64)[:, None, :]  # [L, 1, 2] as (W, H)
    exact = locations.double()
    for _ in range(4):
        pixel = exact.to(dtype).double() * size - 0.5
        near = (pixel - pixel.round()).abs() < 1e-3
        if not near.any():
            break
        exact = torch.where(near, exact + (1 / 3) / size, exact)
    return exact.to(dtype)


def coordinate_extent(shapes_list):
    """Largest |pixel coordinate| of a sample: locations lie in [-0.4, 1.4] (make_inputs)."""
    return 1.4 * max(max(h, w) for h, w in shapes_list)


def max_terms_per_value_element(shapes, starts, locations, spatial):
    """The longest sum in the value gradient: the most (query, sample, corner) terms that land on
    one element of grad_value (the count of in-map bilinear corners per (batch, position, head))."""
    batch, queries, heads, _, points, _ = locations.shape
    counts = torch.zeros(batch, spatial, heads, dtype=torch.long)
    b_index = torch.arange(batch).view(batch, 1, 1, 1).expand(batch, queries, heads, points)
    h_index = torch.arange(heads).view(1, 1, heads, 1).expand(batch, queries, heads, points)
    for level, ((height, width), start) in enumerate(zip(shapes.tolist(), starts.tolist())):
        loc = locations[:, :, :, level].double()
        x0 = (loc[..., 0] * width - 0.5).floor().long()
        y0 = (loc[..., 1] * height - 0.5).floor().long()
        for dx in (0, 1):
            for dy in (0, 1):
                cx, cy = x0 + dx, y0 + dy
                inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
                position = start + cy * width + cx
                counts.index_put_((b_index[inside], position[inside], h_index[inside]),
                                  torch.ones(int(inside.sum()), dtype=torch.long), accumulate=True)
    return int(counts.max())


def rounded_inputs(case, dtype):
    """Random inputs rounded to ``dtype``, a grad_output in ``dtype``, and the float64 results
    (output and the three gradients) of the reference on exactly those rounded values."""
    batch, queries, heads, channels, shapes_list, points = case
    value, shapes, starts, locations, weights = make_inputs(batch, queries, heads, channels, shapes_list, points,
                                                            torch.float64)
    low = [value.to(dtype), away_from_cell_edges(locations, shapes, dtype), weights.to(dtype)]
    grad_out = torch.randn(batch, queries, heads * channels, dtype=torch.float64).to(dtype)
    leaves = [t.double().requires_grad_(True) for t in low]
    exact = ms_deform_attn_reference(leaves[0], shapes, starts, leaves[1], leaves[2])
    exact.backward(grad_out.double())
    return low, shapes, starts, grad_out, [exact.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("impl", ["compiled", "reference"])
@pytest.mark.parametrize("dtype", REDUCED_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("case", DTYPE_CASES, ids=DTYPE_CASE_IDS)
def test_dtype_against_float64(ext, seed, case, dtype, impl):
    """Output and gradients in float16 / bfloat16 / float32 against the float64 op on the same
    rounded inputs, within the bound of op_precision.py (float32 accumulation, one rounding)."""
    _, _, _, channels, shapes_list, points = case
    levels = len(shapes_list)
    low, shapes, starts, grad_out, exact = rounded_inputs(case, dtype)
    op = MSDeformAttnFunction.apply if impl == "compiled" else ms_deform_attn_reference
    leaves = [t.clone().requires_grad_(True) for t in low]
    out = op(leaves[0], shapes, starts, leaves[1], leaves[2])
    out.backward(grad_out)
    spatial = low[0].shape[1]
    terms = {
        "output": 4 * levels * points,  # four corners of every sample
        "grad value": max_terms_per_value_element(shapes, starts, low[1], spatial),
        "grad locations": 4 * channels,  # corner dot products over the channels
        "grad weights": 4 * channels,
    }
    results = [out.detach()] + [t.grad for t in leaves]
    for (name, n), ours, reference in zip(terms.items(), results, exact):
        assert_within(name, dtype, n, coordinate_extent(shapes_list), ours, reference)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_tolerance_rejects_low_precision_accumulation(ext, seed, dtype):
    """The bound of test_dtype_against_float64 separates float32 accumulation from accumulation in
    the 16-bit dtype: on the wide case, the op with its 64 samples summed in ``dtype`` (emulated
    from per-sample float64 contributions) exceeds it, while the kernel stays within it."""
    _, _, _, _, shapes_list, points = WIDE
    low, shapes, starts, _, exact = rounded_inputs(WIDE, dtype)
    value, locations, weights = (t.double() for t in low)  # WIDE has batch 1
    samples = weights.shape[-2] * weights.shape[-1]
    one_hot = torch.eye(samples, dtype=torch.float64).view(samples, 1, 1, *weights.shape[-2:])
    # One call with the batch as the sample index: entry k is sample k's share of every output.
    per_sample = ms_deform_attn_reference(value.expand(samples, -1, -1, -1), shapes, starts,
                                          locations.expand(samples, -1, -1, -1, -1, -1), weights * one_hot)
    contributions = list(per_sample[:, None])
    terms = 4 * len(shapes_list) * points
    emulated_error, scale = max_error(low_precision_sum(contributions, dtype), exact[0])
    kernel_error, _ = max_error(ext.forward(*[low[0], shapes, starts, low[1], low[2]]), exact[0])
    bound = tolerance(dtype, terms, scale, coordinate_extent(shapes_list))
    print(f"{dtype}: kernel {kernel_error / scale:.2e}, {dtype}-accumulation {emulated_error / scale:.2e}, "
          f"bound {bound / scale:.2e} (relative to scale)")
    assert kernel_error <= bound < emulated_error


def test_bad_dtypes_raise_one_line_type_errors(ext, seed):
    value, shapes, starts, locations, weights = make_inputs(2, 5, 2, 4, [(3, 4), (2, 2)], 2, torch.float32)
    accepted = "expected torch.float16, torch.bfloat16, torch.float32 or torch.float64"

    def raises(pattern, *args):
        for call in (ext.forward, ms_deform_attn):
            with pytest.raises(TypeError, match=pattern) as info:
                call(*args)
            message = str(info.value).strip()
            assert "\n" not in message and message.startswith("ms_deform_attn: "), message
        custom_ops.set_backend("reference")
        try:
            with pytest.raises(TypeError, match=pattern):
                ms_deform_attn(*args)
        finally:
            custom_ops.set_backend(None)

    raises(f"value has dtype torch.int64; {accepted}", value.long(), shapes, starts, locations, weights)
    raises(f"attention_weights has dtype torch.int32; {accepted}", value, shapes, starts, locations, weights.int())
    raises(f"sampling_locations has dtype torch.complex64; {accepted}", value, shapes, starts,
           locations.to(torch.complex64), weights)
    raises("sampling_locations has dtype torch.float64 but value has torch.float32",
           value, shapes, starts, locations.double(), weights)
    raises("attention_weights has dtype torch.bfloat16 but value has torch.float16",
           value.half(), shapes, starts, locations.half(), weights.bfloat16())
    with pytest.raises(TypeError, match="grad_output has dtype torch.float16 but value has torch.float32"):
        ext.backward(value, shapes, starts, locations, weights, torch.zeros(2, 5, 8, dtype=torch.float16))


def test_mixed_dtypes_under_autocast_promote_to_the_widest(ext, seed):
    value, shapes, starts, locations, weights = make_inputs(2, 5, 2, 4, [(3, 4), (2, 2)], 2, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ms_deform_attn(value.bfloat16(), shapes, starts, locations, weights.bfloat16())
    assert out.dtype == torch.float32
    expected = ext.forward(value.bfloat16().float(), shapes, starts, locations, weights.bfloat16().float())
    assert torch.equal(out, expected)


def _randomised_module(embed_dims, levels, heads, points, dtype=torch.float32):
    module = MSDeformAttn(embed_dims=embed_dims, num_levels=levels, num_heads=heads, num_points=points).to(dtype)
    with torch.no_grad():  # move away from the symmetric init so every path carries signal
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def test_module_under_bfloat16_autocast(ext, seed, monkeypatch):
    """Forward and backward under CPU bfloat16 autocast: finite and close to the float32 run.

    The linear layers run in bfloat16; the reference points are float32, so the sampling locations
    are float32 and the op is promoted to float32 (bfloat16 locations would be off by up to
    2^-9 of the map width). Bound: a few bfloat16 roundings along each path (inputs, weights and
    outputs of the projections), 16 u(bfloat16) relative to the float32 scale.

    The location gradient of bilinear sampling jumps where a sample crosses into the next pixel
    cell, and the bfloat16 offsets move a few samples across one. So the location gradients are
    compared sample by sample where both runs sample the same cell, and the gradients that mix
    in the crossed samples (query, sampling_offsets) are only required to be finite.

    A projection's weight and bias gradients are sums over the batch's tokens whose terms partly
    cancel, so their error is measured against the sum of the terms' magnitudes (|grad out|
    against |input|, from the float32 run), the scale that bounds a sum's rounding error. A
    location gradient is a difference of bilinear neighbours (v01 - v00) read in bfloat16, whose
    error is relative to the neighbours rather than to their difference: twice the bound (over
    4000 draws the largest was 23 u).
    """
    module = _randomised_module(32, 3, 4, 4)
    query, refs, value, shapes, starts, mask = module_inputs(2, 9, 32, [(6, 5), (3, 3), (2, 1)], False,
                                                             torch.float32)
    query.requires_grad_(True)
    grad_out = torch.randn(2, 9, 32)
    seen = []
    original = MSDeformAttnFunction.apply

    def recording_apply(*args):
        seen.append(args[3])
        args[3].retain_grad()
        return original(*args)

    monkeypatch.setattr(MSDeformAttnFunction, "apply", recording_apply)

    linears = {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    term_magnitudes = {}

    def record_terms(name):
        def hook(linear, inputs, output):
            x = inputs[0].detach().reshape(-1, linear.in_features).double().abs()
            output.register_hook(lambda grad: term_magnitudes.update({
                f"{name}.weight": grad.reshape(-1, linear.out_features).double().abs().T @ x,
                f"{name}.bias": grad.reshape(-1, linear.out_features).double().abs().sum(0)}))
        return hook

    def run(autocast):
        module.zero_grad()
        query.grad = value.grad = None
        handles = [] if autocast else [m.register_forward_hook(record_terms(n)) for n, m in linears.items()]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = module(query, refs, value, shapes, starts, mask)
        out.float().backward(grad_out)
        for handle in handles:
            handle.remove()
        grads = {"query": query.grad.clone(), "value": value.grad.clone()}
        grads.update({name: p.grad.clone() for name, p in module.named_parameters()})
        return out, grads

    out32, grads32 = run(False)
    out16, grads16 = run(True)
    assert set(term_magnitudes) == {name for name, _ in module.named_parameters()}
    loc32, loc16 = seen
    assert loc16.dtype == torch.float32  # promoted: float32 locations next to bfloat16 values
    assert out16.dtype == torch.bfloat16  # output_proj ran in bfloat16
    bound = 16 * unit_roundoff(torch.bfloat16)

    def assert_close(name, ours, reference, scale=None, bound=bound):
        assert torch.isfinite(ours).all(), name
        error, reference_scale = max_error(ours.float().double(), reference.double())
        scale = reference_scale if scale is None else scale
        assert error <= bound * scale, f"{name}: relative error {error / scale:.3e} > {bound:.3e}"

    assert_close("output", out16, out32)
    crossing = {"query", "sampling_offsets.weight", "sampling_offsets.bias"}
    for name in grads32:
        if name in crossing:
            assert torch.isfinite(grads16[name]).all(), name
        else:
            terms = term_magnitudes.get(name)
            assert_close(name, grads16[name], grads32[name], None if terms is None else terms.max().item())
    size = shapes.flip(-1).to(torch.float32)[:, None, :]  # [L, 1, 2] as (W, H)
    same_cell = ((loc32.detach() * size - 0.5).floor() == (loc16.detach() * size - 0.5).floor()).all(-1)
    assert same_cell.float().mean() > 0.9, "bfloat16 moved many samples to another cell"
    assert_close("location gradients of samples in the same cell", loc16.grad[same_cell], loc32.grad[same_cell],
                 bound=2 * bound)
