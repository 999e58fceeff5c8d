"""DCNv3 op: compiled kernel vs the grid_sample reference, vs independent oracles (plain depthwise
average conv, integer shifts), gradients, thread-count independence, argument errors, float16 /
bfloat16 / float32 against float64 (tolerances in op_precision.py), module (also under bfloat16
autocast)."""
import os

import pytest
import torch
import torch.nn.functional as F

import custom_ops
from custom_ops._extension import load_extension
from custom_ops.dcnv3 import DCNv3, DCNv3Function, dcnv3, dcnv3_reference
from custom_ops.dcnv3.reference import _sampling_locations
from op_precision import REDUCED_DTYPES, assert_within, low_precision_sum, max_error, tolerance, unit_roundoff


@pytest.fixture(scope="module")
def compiled():
    ext = load_extension("custom_ops.dcnv3._C")
    assert ext is not None, "custom_ops.dcnv3._C is not built (make ops)"
    return ext


@pytest.fixture
def gen():
    """Fresh random inputs every run; the seed is printed so a failure can be replayed."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"dcnv3 test seed {seed}")
    return torch.Generator().manual_seed(seed)


def out_size(size, kernel, stride, pad, dilation):
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def make_inputs(gen, batch, height, width, group, group_channels, kernel, stride, pad, dilation, dtype,
                offset_range=2.0, kernel_w=None):
    """Random input, offsets uniform in ±offset_range pixels, masks softmaxed per group."""
    kernel_w = kernel if kernel_w is None else kernel_w
    h_out = out_size(height, kernel, stride, pad, dilation)
    w_out = out_size(width, kernel_w, stride, pad, dilation)
    points = kernel * kernel_w
    x = torch.randn(batch, height, width, group * group_channels, generator=gen, dtype=dtype)
    offset = (torch.rand(batch, h_out, w_out, group * points * 2, generator=gen, dtype=dtype) * 2 - 1) * offset_range
    logits = torch.randn(batch, h_out, w_out, group, points, generator=gen, dtype=dtype)
    mask = logits.softmax(-1).reshape(batch, h_out, w_out, group * points)
    return x, offset, mask


def run(fn, x, offset, mask, group, group_channels, kernel, stride, pad, dilation, scale, kernel_w=None):
    kernel_w = kernel if kernel_w is None else kernel_w
    return fn(x, offset, mask, kernel, kernel_w, stride, stride, pad, pad, dilation, dilation, group,
              group_channels, scale)


# (batch, H, W, group, group_channels, kernel, stride, pad, dilation, offset_scale, offset_range)
CASES = [
    (2, 9, 7, 4, 16, 3, 1, 1, 1, 1.0, 2.0),    # InternImage-like, non-square
    (1, 6, 11, 2, 3, 3, 2, 1, 1, 1.0, 1.5),    # stride 2
    (3, 8, 8, 3, 1, 3, 1, 2, 2, 0.5, 2.0),     # dilation 2, 1 channel per group, batch 3
    (1, 7, 5, 1, 3, 3, 1, 0, 1, 1.0, 1.0),     # pad 0, one group
    (2, 9, 10, 2, 16, 5, 1, 2, 1, 1.0, 3.0),   # kernel 5
    (1, 5, 6, 4, 3, 1, 1, 0, 1, 1.0, 2.0),     # kernel 1
    (2, 5, 4, 3, 3, 3, 1, 1, 1, 2.0, 6.0),     # offsets push most samples outside the map
]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_reference(compiled, gen, case, dtype, tol):
    batch, h, w, group, cg, k, s, p, d, scale, rng = case
    x, offset, mask = make_inputs(gen, batch, h, w, group, cg, k, s, p, d, dtype, rng)
    ours = run(dcnv3, x, offset, mask, group, cg, k, s, p, d, scale)
    ref = run(dcnv3_reference, x, offset, mask, group, cg, k, s, p, d, scale)
    assert ours.shape == ref.shape == (batch, out_size(h, k, s, p, d), out_size(w, k, s, p, d), group * cg)
    assert ref.abs().max() > 0
    rel = (ours - ref).abs().max() / ref.abs().max()
    assert rel < tol, f"relative error {rel:.3e}"


def test_rectangular_kernel(compiled, gen):
    """Kh != Kw exercises the point order p = i * Kh + j (width index outermost)."""
    x, offset, mask = make_inputs(gen, 2, 7, 8, 2, 3, 3, 1, 1, 1, torch.float64, kernel_w=5)
    args = (3, 5, 1, 1, 1, 1, 1, 1, 2, 3, 0.8)
    ours = dcnv3(x, offset, mask, *args)
    ref = dcnv3_reference(x, offset, mask, *args)
    assert ((ours - ref).abs().max() / ref.abs().max()) < 1e-10


def test_samples_far_outside_give_zero(compiled, gen):
    x, offset, mask = make_inputs(gen, 1, 5, 5, 2, 3, 3, 1, 1, 1, torch.float64)
    offset = offset.sign() * 50 + offset  # every sample at least 47 pixels away
    out = run(dcnv3, x, offset, mask, 2, 3, 3, 1, 1, 1, 1.0)
    assert torch.count_nonzero(out) == 0


def test_zero_offsets_uniform_masks_equal_average_conv(compiled, gen):
    """Independent oracle: with no offsets and uniform masks DCNv3 is a depthwise box filter."""
    for batch, h, w, group, cg, k, s, p, d in [(2, 9, 7, 3, 4, 3, 1, 1, 1), (1, 10, 8, 2, 3, 3, 2, 2, 2),
                                               (1, 6, 9, 1, 2, 5, 1, 0, 1)]:
        x, offset, mask = make_inputs(gen, batch, h, w, group, cg, k, s, p, d, torch.float64)
        offset.zero_()
        mask.fill_(1.0 / (k * k))
        ours = run(dcnv3, x, offset, mask, group, cg, k, s, p, d, 1.0)
        weight = torch.full((group * cg, 1, k, k), 1.0 / (k * k), dtype=torch.float64)
        conv = F.conv2d(x.permute(0, 3, 1, 2), weight, stride=s, padding=p, dilation=d, groups=group * cg)
        torch.testing.assert_close(ours, conv.permute(0, 2, 3, 1), rtol=1e-12, atol=1e-12)


def shifted_sum_oracle(x, int_offset, mask, group, group_channels, kernel, stride, pad, dilation, scale):
    """DCNv3 for integer sampling positions by direct indexing (no interpolation, no grid_sample)."""
    n, h, w, _ = x.shape
    _, h_out, w_out, _ = mask.shape
    points = kernel * kernel
    half = dilation * (kernel - 1) // 2
    xg = x.reshape(n, h, w, group, group_channels)
    off = int_offset.reshape(n, h_out, w_out, group, points, 2)
    out = torch.zeros(n, h_out, w_out, group, group_channels, dtype=x.dtype)
    ho = torch.arange(h_out).view(1, h_out, 1, 1)
    wo = torch.arange(w_out).view(1, 1, w_out, 1)
    bn = torch.arange(n).view(n, 1, 1, 1)
    bg = torch.arange(group).view(1, 1, 1, group)
    for i in range(kernel):        # along the width
        for j in range(kernel):    # along the height
            p = i * kernel + j
            ys = half - pad + ho * stride + (j * dilation - half + off[..., p, 1]) * scale
            xs = half - pad + wo * stride + (i * dilation - half + off[..., p, 0]) * scale
            inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            vals = xg[bn, ys.clamp(0, h - 1), xs.clamp(0, w - 1), bg]  # [n, Ho, Wo, G, Cg]
            out += vals * (inside * mask.reshape(n, h_out, w_out, group, points)[..., p]).unsqueeze(-1)
    return out.reshape(n, h_out, w_out, group * group_channels)


@pytest.mark.parametrize("scale", [1, 2])
def test_integer_offsets_equal_shifted_sums(compiled, gen, scale):
    batch, h, w, group, cg, k, s, p, d = 2, 8, 9, 3, 5, 3, 2, 1, 1
    x, _, mask = make_inputs(gen, batch, h, w, group, cg, k, s, p, d, torch.float64)
    h_out, w_out = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
    int_offset = torch.randint(-4, 5, (batch, h_out, w_out, group * k * k * 2), generator=gen)
    ours = run(dcnv3, x, int_offset.to(torch.float64), mask, group, cg, k, s, p, d, float(scale))
    oracle = shifted_sum_oracle(x, int_offset, mask, group, cg, k, s, p, d, scale)
    torch.testing.assert_close(ours, oracle, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [
    (1, 4, 4, 2, 2, 3, 1, 1, 1, 0.7, 2.0),
    (2, 6, 7, 1, 2, 3, 2, 0, 2, 1.0, 1.5),
    (1, 3, 4, 3, 1, 1, 1, 0, 1, 1.0, 3.0),
])
def test_gradcheck(compiled, gen, case):
    batch, h, w, group, cg, k, s, p, d, scale, rng = case
    x, offset, mask = make_inputs(gen, batch, h, w, group, cg, k, s, p, d, torch.float64, rng)
    # bilinear sampling has kinks where a coordinate is an integer: keep finite differences off them
    loc = _sampling_locations(offset, h, w, k, k, s, s, p, p, d, d, group, scale).flatten(3, 5)
    frac = loc - loc.floor()
    offset = offset + ((frac < 0.02) | (frac > 0.98)).to(offset.dtype) * (0.05 / scale)
    inputs = tuple(t.clone().requires_grad_() for t in (x, offset, mask))
    fn = lambda a, b, c: DCNv3Function.apply(a, b, c, k, k, s, s, p, p, d, d, group, cg, scale)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[4], CASES[6]])
def test_backward_matches_reference(compiled, gen, case):
    batch, h, w, group, cg, k, s, p, d, scale, rng = case
    x, offset, mask = make_inputs(gen, batch, h, w, group, cg, k, s, p, d, torch.float64, rng)
    grad_out = torch.randn(batch, out_size(h, k, s, p, d), out_size(w, k, s, p, d), group * cg,
                           generator=gen, dtype=torch.float64)
    grads = []
    for fn in (dcnv3, dcnv3_reference):
        leaves = [t.clone().requires_grad_() for t in (x, offset, mask)]
        run(fn, *leaves, group, cg, k, s, p, d, scale).backward(grad_out)
        grads.append([t.grad for t in leaves])
    for name, ours, ref in zip(("input", "offset", "mask"), *grads):
        rel = (ours - ref).abs().max() / ref.abs().max()
        assert rel < 1e-10, f"grad {name}: relative error {rel:.3e}"


def forward_backward(x, offset, mask, grad_out, group, group_channels):
    leaves = [t.clone().requires_grad_() for t in (x, offset, mask)]
    out = run(dcnv3, *leaves, group, group_channels, 3, 1, 1, 1, 1.0)
    out.backward(grad_out)
    return [out.detach()] + [t.grad for t in leaves]


def test_thread_count_does_not_change_results(compiled, gen):
    # group 1: few (image, group) pairs, two-pass backward split over channel blocks;
    # group 8: the fused one-pass backward over (image, group) tasks
    for group in (1, 8):
        x, offset, mask = make_inputs(gen, 1, 12, 10, group, 16, 3, 1, 1, 1, torch.float32, 2.0)
        grad_out = torch.randn(1, 12, 10, group * 16, generator=gen)
        results = []
        before = torch.get_num_threads()
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                results.append(forward_backward(x, offset, mask, grad_out, group, 16))
        finally:
            torch.set_num_threads(before)
        for one, two in zip(*results):
            assert torch.equal(one, two)


def test_images_of_a_batch_are_independent(compiled, gen):
    """A batch of 3 with 4 groups (12 tasks: fused backward) equals each image alone (4 tasks:
    two-pass backward), bit for bit."""
    x, offset, mask = make_inputs(gen, 3, 9, 8, 4, 5, 3, 1, 1, 1, torch.float32, 2.0)
    grad_out = torch.randn(3, 9, 8, 20, generator=gen)
    together = forward_backward(x, offset, mask, grad_out, 4, 5)
    alone = [forward_backward(x[b:b + 1], offset[b:b + 1], mask[b:b + 1], grad_out[b:b + 1], 4, 5)
             for b in range(3)]
    for k, name in enumerate(("output", "grad input", "grad offset", "grad mask")):
        assert torch.equal(together[k], torch.cat([a[k] for a in alone])), name


def test_bad_arguments_raise_clear_errors(compiled, gen):
    x, offset, mask = make_inputs(gen, 1, 6, 6, 2, 4, 3, 1, 1, 1, torch.float32)
    args = (3, 3, 1, 1, 1, 1, 1, 1, 2, 4, 1.0)
    with pytest.raises(RuntimeError, match="offset must have shape"):
        dcnv3(x, offset[..., :-2].contiguous(), mask, *args)
    with pytest.raises(RuntimeError, match="mask must have shape"):
        dcnv3(x, offset, mask[:, :-1].contiguous(), *args)
    with pytest.raises(RuntimeError, match="channels but group"):
        dcnv3(x, offset, mask, 3, 3, 1, 1, 1, 1, 1, 1, 2, 3, 1.0)
    with pytest.raises(RuntimeError, match="4-D"):
        dcnv3(x[0], offset, mask, *args)
    with pytest.raises(RuntimeError, match="contiguous"):
        dcnv3(x.transpose(1, 2).contiguous().transpose(1, 2), offset, mask, *args)
    with pytest.raises(RuntimeError, match="is on"):
        dcnv3(x, offset.to("meta"), mask, *args)
    with pytest.raises(RuntimeError, match="too small"):
        dcnv3(x, offset, mask, 9, 9, 1, 1, 0, 0, 1, 1, 2, 4, 1.0)
    with pytest.raises(RuntimeError, match="stride must be positive"):
        dcnv3(x, offset, mask, 3, 3, 0, 0, 1, 1, 1, 1, 2, 4, 1.0)


def test_backend_switch_uses_reference(compiled, gen):
    x, offset, mask = make_inputs(gen, 1, 5, 5, 2, 3, 3, 1, 1, 1, torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, offset, mask)]
    custom_ops.set_backend("reference")
    try:
        out_ref = run(dcnv3, *leaves, 2, 3, 3, 1, 1, 1, 1.0)
    finally:
        custom_ops.set_backend(None)
    out_ours = run(dcnv3, *leaves, 2, 3, 3, 1, 1, 1, 1.0)
    assert "DCNv3Function" not in type(out_ref.grad_fn).__name__
    assert "DCNv3Function" in type(out_ours.grad_fn).__name__
    torch.testing.assert_close(out_ours, out_ref, rtol=1e-10, atol=1e-12)


def test_missing_extension_falls_back_to_reference(gen, monkeypatch):
    import custom_ops.dcnv3.function as function

    monkeypatch.setattr(function, "_compiled", lambda: None)  # as if `make ops` had not run
    x, offset, mask = make_inputs(gen, 2, 5, 6, 2, 3, 3, 1, 1, 1, torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, offset, mask)]
    out = run(dcnv3, *leaves, 2, 3, 3, 1, 1, 1, 1.0)
    assert "DCNv3Function" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, run(dcnv3_reference, x, offset, mask, 2, 3, 3, 1, 1, 1, 1.0))
    out.sum().backward()
    assert all(t.grad is not None for t in leaves)


@pytest.mark.parametrize("center_feature_scale", [False, True])
def test_module_matches_module_on_reference_op(compiled, gen, center_feature_scale):
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    module = DCNv3(channels=24, kernel_size=3, group=3, offset_scale=1.0,
                   center_feature_scale=center_feature_scale).double()
    # InternImage starts with zero offsets and masks; randomise them so sampling is really deformable
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
    x = torch.randn(2, 7, 9, 24, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(2, 7, 9, 24, generator=gen, dtype=torch.float64)
    results = []
    for backend in ("compiled", "reference"):
        custom_ops.set_backend(backend)
        try:
            module.zero_grad()
            xi = x.clone().requires_grad_()
            out = module(xi)
            out.backward(grad_out)
        finally:
            custom_ops.set_backend(None)
        results.append((out.detach(), xi.grad, {n: p.grad.clone() for n, p in module.named_parameters()}))
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
    torch.testing.assert_close(out_a, out_b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx_a, gx_b, rtol=1e-9, atol=1e-11)
    for name in gp_a:
        torch.testing.assert_close(gp_a[name], gp_b[name], rtol=1e-9, atol=1e-11, msg=name)
    assert gp_a["offset.weight"].abs().sum() > 0 and gp_a["mask.weight"].abs().sum() > 0


def test_module_initialisation_is_a_uniform_average():
    """Zero-initialised offsets/masks: the op is a box filter between the two projections."""
    module = DCNv3(channels=16, group=4)
    assert module.offset.weight.abs().sum() == 0 and module.mask.weight.abs().sum() == 0
    x = torch.randn(1, 6, 5, 16)
    out = module(x)
    projected = module.input_proj(x).permute(0, 3, 1, 2)
    box = F.conv2d(projected, torch.full((16, 1, 3, 3), 1 / 9), padding=1, groups=16)
    expected = module.output_proj(box.permute(0, 2, 3, 1))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_module_is_registered():
    from visionllm.registry import MODELS

    # module_dict, not build(): build() first imports all of visionllm.models, which is slow
    assert MODELS.module_dict["DCNv3"] is DCNv3
    assert DCNv3(channels=32, group=8).group_channels == 4
    with pytest.raises(ValueError, match="divisible"):
        DCNv3(channels=30, group=4)


# ----------------------------------------------------------------------------------------------
# float16 / bfloat16 / float32 against float64
# ----------------------------------------------------------------------------------------------
# Kernel 7: 49 points, so 196-term sums in the output and about as many per input-gradient pixel.
WIDE = (1, 12, 10, 2, 8, 7, 1, 3, 1, 1.0, 2.0)
DTYPE_CASES = [CASES[0], CASES[1], CASES[2], WIDE]
DTYPE_CASE_IDS = ["internimage-like", "stride2", "dilation2-scale0.5", "wide-k7"]


def away_from_cell_edges(offset, dtype, height, width, kernel, stride, pad, dilation, group, scale):
    """``offset`` rounded to ``dtype`` with no sampling coordinate within 1e-3 of an integer.

    The offset gradient jumps where a sample crosses into the next bilinear cell, and the
    reference (which divides by the map size for grid_sample) and the kernel may put a coordinate
    that sits exactly on an integer -- frequent with 16-bit offsets -- on different sides.
    """
    offset = offset.to(dtype)
    for _ in range(10):
        loc = _sampling_locations(offset.double(), height, width, kernel, kernel, stride, stride, pad, pad,
                                  dilation, dilation, group, scale)
        near = ((loc - loc.round()).abs() < 1e-3).flatten(3)  # [N, Ho, Wo, G*P*2] like offset
        if not near.any():
            return offset
        offset = (offset.double() + near.double() * (0.03 / scale)).to(dtype)
    raise AssertionError("could not move the samples off the pixel grid")


def coordinate_extent(case):
    """Largest |pixel coordinate| of a sample: the map, the kernel reach and the offsets."""
    batch, h, w, group, cg, k, s, p, d, scale, rng = case
    return max(h, w) + (k * d + rng) * scale


def max_terms_per_input_element(offset, height, width, kernel, stride, pad, dilation, group, scale):
    """The longest sum in the input gradient: the most (position, point, corner) terms that land
    on one element (the count of in-map bilinear corners per (image, pixel, group))."""
    loc = _sampling_locations(offset.double(), height, width, kernel, kernel, stride, stride, pad, pad, dilation,
                              dilation, group, scale)  # [N, Ho, Wo, G, P, 2]
    batch = loc.shape[0]
    counts = torch.zeros(batch, height * width, group, dtype=torch.long)
    n_index = torch.arange(batch).view(batch, 1, 1, 1, 1).expand(loc.shape[:-1])
    g_index = torch.arange(group).view(1, 1, 1, group, 1).expand(loc.shape[:-1])
    x0, y0 = loc[..., 0].floor().long(), loc[..., 1].floor().long()
    for dx in (0, 1):
        for dy in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
            counts.index_put_((n_index[inside], (cy * width + cx)[inside], g_index[inside]),
                              torch.ones(int(inside.sum()), dtype=torch.long), accumulate=True)
    return int(counts.max())


def rounded_inputs(gen, case, dtype):
    """Random inputs rounded to ``dtype``, a grad_output in ``dtype``, and the float64 results
    (output and the three gradients) of the reference on exactly those rounded values."""
    batch, h, w, group, cg, k, s, p, d, scale, rng = case
    x, offset, mask = make_inputs(gen, batch, h, w, group, cg, k, s, p, d, torch.float64, rng)
    offset = away_from_cell_edges(offset, dtype, h, w, k, s, p, d, group, scale)
    low = [x.to(dtype), offset, mask.to(dtype)]
    grad_out = torch.randn(batch, out_size(h, k, s, p, d), out_size(w, k, s, p, d), group * cg, generator=gen,
                           dtype=torch.float64).to(dtype)
    leaves = [t.double().requires_grad_() for t in low]
    exact = run(dcnv3_reference, *leaves, group, cg, k, s, p, d, scale)
    exact.backward(grad_out.double())
    return low, grad_out, [exact.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("impl", ["compiled", "reference"])
@pytest.mark.parametrize("dtype", REDUCED_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("case", DTYPE_CASES, ids=DTYPE_CASE_IDS)
def test_dtype_against_float64(compiled, gen, case, dtype, impl):
    """Output and gradients in float16 / bfloat16 / float32 against the float64 op on the same
    rounded inputs, within the bound of op_precision.py (float32 accumulation, one rounding)."""
    batch, h, w, group, cg, k, s, p, d, scale, rng = case
    low, grad_out, exact = rounded_inputs(gen, case, dtype)
    op = DCNv3Function.apply if impl == "compiled" else dcnv3_reference
    leaves = [t.clone().requires_grad_() for t in low]
    out = run(op, *leaves, group, cg, k, s, p, d, scale)
    out.backward(grad_out)
    terms = {
        "output": 4 * k * k,  # four corners of every kernel point
        "grad input": max_terms_per_input_element(low[1], h, w, k, s, p, d, group, scale),
        "grad offset": 4 * cg,  # corner dot products over the group's channels
        "grad mask": 4 * cg,
    }
    results = [out.detach()] + [t.grad for t in leaves]
    for (name, n), ours, reference in zip(terms.items(), results, exact):
        assert_within(name, dtype, n, coordinate_extent(case), ours, reference)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_tolerance_rejects_low_precision_accumulation(compiled, gen, dtype):
    """The bound of test_dtype_against_float64 separates float32 accumulation from accumulation in
    the 16-bit dtype: on the kernel-7 case, the op with its 49 points summed in ``dtype``
    (emulated from per-point float64 contributions) exceeds it, while the kernel stays within it."""
    batch, h, w, group, cg, k, s, p, d, scale, rng = WIDE
    low, _, exact = rounded_inputs(gen, WIDE, dtype)
    x, offset, mask = (t.double() for t in low)
    points = k * k
    one_hot = torch.eye(points, dtype=torch.float64).repeat(1, group)  # [P, G*P]: point k of every group
    contributions = [run(dcnv3_reference, x, offset, mask * one_hot[i], group, cg, k, s, p, d, scale)
                     for i in range(points)]
    emulated_error, scale_out = max_error(low_precision_sum(contributions, dtype), exact[0])
    kernel_error, _ = max_error(run(compiled.forward, *low, group, cg, k, s, p, d, scale), exact[0])
    bound = tolerance(dtype, 4 * points, scale_out, coordinate_extent(WIDE))
    print(f"{dtype}: kernel {kernel_error / scale_out:.2e}, {dtype}-accumulation {emulated_error / scale_out:.2e}, "
          f"bound {bound / scale_out:.2e} (relative to scale)")
    assert kernel_error <= bound < emulated_error


def test_bad_dtypes_raise_one_line_type_errors(compiled, gen):
    x, offset, mask = make_inputs(gen, 1, 6, 6, 2, 4, 3, 1, 1, 1, torch.float32)
    args = (3, 3, 1, 1, 1, 1, 1, 1, 2, 4, 1.0)
    accepted = "expected torch.float16, torch.bfloat16, torch.float32 or torch.float64"

    def raises(pattern, *tensors):
        for call in (compiled.forward, dcnv3):
            with pytest.raises(TypeError, match=pattern) as info:
                call(*tensors, *args)
            message = str(info.value).strip()
            assert "\n" not in message and message.startswith("dcnv3: "), message
        custom_ops.set_backend("reference")
        try:
            with pytest.raises(TypeError, match=pattern):
                dcnv3(*tensors, *args)
        finally:
            custom_ops.set_backend(None)

    raises(f"input has dtype torch.int64; {accepted}", x.long(), offset, mask)
    raises(f"mask has dtype torch.uint8; {accepted}", x, offset, mask.to(torch.uint8))
    raises(f"offset has dtype torch.complex128; {accepted}", x, offset.to(torch.complex128), mask)
    raises("offset has dtype torch.float64 but input has torch.float32", x, offset.double(), mask)
    raises("mask has dtype torch.float16 but input has torch.bfloat16", x.bfloat16(), offset.bfloat16(), mask.half())
    with pytest.raises(TypeError, match="grad_output has dtype torch.float64 but input has torch.float32"):
        compiled.backward(x, offset, mask, torch.zeros(1, 6, 6, 8, dtype=torch.float64), *args)


def test_module_under_bfloat16_autocast(compiled, gen, monkeypatch):
    """Forward and backward under CPU bfloat16 autocast: finite and close to the float32 run, with
    the op itself running in bfloat16 (projections, offsets and masks all arrive in bfloat16).
    Bound: a few bfloat16 roundings along each path, 16 u(bfloat16) relative to the float32 scale.

    The offset gradient of bilinear sampling jumps where a sample crosses into the next pixel
    cell and moves with the sample's position inside it, so it cannot be compared with the float32
    run (the bfloat16 offsets differ by a rounding of their own size). It is compared instead with
    the float64 reference op evaluated at the bfloat16 run's own inputs and output gradient; the
    gradients that mix it in upstream (input, dw_conv, offset) are only required to be finite.
    """
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    module = DCNv3(channels=24, kernel_size=3, group=3, center_feature_scale=True)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    x = torch.randn(2, 7, 9, 24, generator=gen, requires_grad=True)
    grad_out = torch.randn(2, 7, 9, 24, generator=gen)
    seen = []
    original = DCNv3Function.apply

    def recording_apply(*args):
        # fresh nodes, so their .grad holds the op's gradient alone (x_proj also feeds the gate)
        args = (*(tensor.clone() for tensor in args[:3]), *args[3:])
        call = dict(args=args, grad=None)
        seen.append(call)
        for tensor in args[:3]:
            tensor.retain_grad()
        out = original(*args)
        out.register_hook(lambda grad: call.update(grad=grad))
        return out

    monkeypatch.setattr(DCNv3Function, "apply", recording_apply)

    def run_module(autocast):
        module.zero_grad()
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = module(x)
        out.float().backward(grad_out)
        grads = {"input": x.grad.clone()}
        grads.update({name: p.grad.clone() for name, p in module.named_parameters()})
        return out, grads

    out32, grads32 = run_module(False)
    out16, grads16 = run_module(True)
    call16 = seen[1]
    input16, offset16, mask16 = call16["args"][:3]
    assert input16.dtype == offset16.dtype == mask16.dtype == torch.bfloat16  # the kernel ran in bfloat16
    assert out16.dtype == torch.bfloat16
    bound = 16 * unit_roundoff(torch.bfloat16)

    def assert_close(name, ours, reference):
        assert torch.isfinite(ours).all(), name
        error, scale = max_error(ours.float().double(), reference.double())
        assert error <= bound * scale, f"{name}: relative error {error / scale:.3e} > {bound:.3e}"

    assert_close("output", out16, out32)
    for name in grads32:
        if name == "input" or name.startswith(("dw_conv.", "offset.")):
            assert torch.isfinite(grads16[name]).all(), name
        else:
            assert_close(name, grads16[name], grads32[name])
    exact = [t.detach().double().requires_grad_() for t in (input16, offset16, mask16)]
    geometry = call16["args"][3:]
    dcnv3_reference(*exact, *geometry).backward(call16["grad"].double())
    for name, ours, reference in zip(("input", "mask"), (input16, mask16), (exact[0], exact[2])):
        assert_close(f"op {name} gradient vs float64 at the same inputs", ours.grad, reference.grad)
    # bfloat16 offsets land exactly on a pixel row or column often (8 mantissa bits), where the
    # derivative of bilinear sampling has two one-sided values that either side may take
    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, group, _, scale = geometry
    locations = _sampling_locations(offset16.detach().double(), x.shape[1], x.shape[2], kernel_h, kernel_w,
                                    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, group, scale)
    off_grid = (locations != locations.round()).all(-1, keepdim=True).expand_as(locations).reshape(offset16.shape)
    assert off_grid.float().mean() > 0.5
    assert_close("op offset gradient vs float64 at the same inputs (samples off the pixel grid)",
                 offset16.grad[off_grid], exact[1].grad[off_grid])
