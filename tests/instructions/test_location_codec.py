"""LocationCodec: round trips within half a bin, clipping, expectation decoding (property-based)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visionllm.instructions import LocationCodec

# A decorator, not a global profile: other test modules keep their own hypothesis settings.
fast = settings(max_examples=60, deadline=None)

num_bins_st = st.sampled_from([1025, 513, 201, 65, 3])
size_st = st.floats(min_value=1.0, max_value=4096.0, allow_nan=False)
unit_st = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def _tolerance(codec, w, h):
    # Half a bin, plus float32 rounding of pixel values up to 4096.
    return torch.tensor([w, h], dtype=torch.float64) / codec.half / 2 + 1e-3


@fast
@given(num_bins=num_bins_st, w=size_st, h=size_st, seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6))
def test_box_round_trip_within_half_bin(num_bins, w, h, seed, n):
    codec = LocationCodec(num_bins)
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(n, 2, 2, generator=g) * torch.tensor([w, h])
    boxes = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
    ref = torch.rand(n, 2, generator=g)
    bins = codec.encode_boxes(boxes, ref, (w, h))
    assert bins.dtype == torch.long and bins.shape == (n, 4)
    assert int(bins.min()) >= 0 and int(bins.max()) < num_bins
    decoded = codec.decode_boxes(bins, ref, (w, h))
    err = (decoded.double() - boxes.double()).abs().reshape(n, 2, 2)
    assert (err <= _tolerance(codec, w, h)).all()


@fast
@given(num_bins=num_bins_st, w=size_st, h=size_st, seed=st.integers(0, 2**31 - 1),
       k=st.sampled_from([3, 8, 14, 16, 20, 24]))
def test_polygon_round_trip_within_half_bin(num_bins, w, h, seed, k):
    codec = LocationCodec(num_bins)
    g = torch.Generator().manual_seed(seed)
    polygons = torch.rand(3, k, 2, generator=g) * torch.tensor([w, h])
    ref = torch.rand(3, 2, generator=g)
    bins = codec.encode_polygons(polygons, ref, (w, h))
    assert bins.shape == (3, k, 2)
    decoded = codec.decode_polygons(bins, ref, (w, h))
    assert ((decoded.double() - polygons.double()).abs() <= _tolerance(codec, w, h)).all()


@fast
@given(x=unit_st, y=unit_st, rx=unit_st, ry=unit_st, w=size_st, h=size_st)
def test_any_point_any_reference_round_trip(x, y, rx, ry, w, h):
    codec = LocationCodec()
    point = torch.tensor([[x * w, y * h]], dtype=torch.float64)
    ref = torch.tensor([[rx, ry]])
    bins = codec.encode(point, ref, (w, h))
    decoded = codec.decode(bins, ref, (w, h), dtype=torch.float64)
    assert ((decoded - point).abs() <= _tolerance(codec, w, h)).all()
    # The bin is the offset from the reference point in units of W / half.
    offset = codec.offset_of_bin(bins)[0, 0].item()
    assert abs(offset - (x - rx) * codec.half) <= 0.5 + 1e-6


@fast
@given(rx=unit_st, ry=unit_st, w=size_st, h=size_st, beyond=st.floats(1.0, 50.0))
def test_clipping_at_range_edge(rx, ry, w, h, beyond):
    codec = LocationCodec(1025)
    ref = torch.tensor([rx, ry])
    far = torch.tensor([rx * w + beyond * w * 1.001, ry * h - beyond * h * 1.001], dtype=torch.float64)
    bins = codec.encode(far, ref, (w, h))
    assert bins.tolist() == [codec.num_bins - 1, 0]
    decoded = codec.decode(bins, ref, (w, h), dtype=torch.float64)
    expected = torch.tensor([rx * w + w, ry * h - h], dtype=torch.float64)
    assert torch.allclose(decoded, expected, atol=1e-6 * max(w, h))


def test_tensor_image_size_per_item():
    codec = LocationCodec(257)
    sizes = torch.tensor([[100.0, 50.0], [640.0, 480.0]])
    boxes = torch.rand(2, 4) * sizes.repeat(1, 2)
    ref = torch.rand(2, 2)
    bins = codec.encode_boxes(boxes, ref, sizes)
    decoded = codec.decode_boxes(bins, ref, sizes)
    tol = (sizes / codec.half / 2 + 1e-4).repeat(1, 2)
    assert ((decoded - boxes).abs() <= tol).all()
    # Same as encoding each box alone with its own size.
    for i in range(2):
        alone = codec.encode_boxes(boxes[i:i + 1], ref[i:i + 1], tuple(sizes[i].tolist()))
        assert torch.equal(alone[0], bins[i])
    polygons = torch.rand(2, 8, 2) * sizes.unsqueeze(1)
    poly_bins = codec.encode_polygons(polygons, ref, sizes)
    assert torch.equal(poly_bins[1], codec.encode_polygons(polygons[1:], ref[1:], tuple(sizes[1].tolist()))[0])
    assert ((codec.decode_polygons(poly_bins, ref, sizes) - polygons).abs() <= tol[:, None, :2]).all()


@fast
@given(seed=st.integers(0, 2**31 - 1), w=size_st, h=size_st)
def test_decode_expectation(seed, w, h):
    codec = LocationCodec(65)
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(4, 2, generator=g, dtype=torch.float64)
    size = (w, h)
    # A one-hot distribution decodes like decode().
    bins = torch.randint(0, codec.num_bins, (4, 2), generator=g)
    one_hot = torch.nn.functional.one_hot(bins, codec.num_bins).double()
    assert torch.allclose(codec.decode_expectation(one_hot, ref, size),
                          codec.decode(bins, ref, size, dtype=torch.float64), atol=1e-9 * max(w, h))
    # A two-bin mixture decodes between them, at the weighted mean; unnormalised input is fine.
    other = torch.randint(0, codec.num_bins, (4, 2), generator=g)
    p = torch.rand(4, 2, 1, generator=g, dtype=torch.float64)
    mixture = 3.0 * (p * one_hot + (1 - p) * torch.nn.functional.one_hot(other, codec.num_bins).double())
    expected = (p.squeeze(-1) * codec.decode(bins, ref, size, dtype=torch.float64)
                + (1 - p.squeeze(-1)) * codec.decode(other, ref, size, dtype=torch.float64))
    assert torch.allclose(codec.decode_expectation(mixture, ref, size), expected, atol=1e-9 * max(w, h))


def test_decode_expectation_is_differentiable():
    codec = LocationCodec(33)
    logits = torch.randn(5, 2, 33, requires_grad=True)
    coords = codec.decode_expectation(logits.softmax(-1), torch.rand(5, 2), (64, 48))
    coords.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_rejects_even_bins():
    with pytest.raises(ValueError):
        LocationCodec(1024)
