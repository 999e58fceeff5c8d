"""Error bounds for the compiled ops at each dtype, shared by the op tests.

The kernels read float16 / bfloat16 / float32 inputs, compute and accumulate in float32 (float64
stays float64) and round every result to the input dtype once. Compared with the float64 op on
the *same* (already rounded) inputs, a result whose exact value is ``y`` and which comes out of an
``n``-term float32 sum is then off by at most

    u(dtype) * |y|                  rounding the float32 result to dtype once
  + n * u(float32) * sum |terms|    the first-order bound of an n-term float32 sum
  + 2 * extent * u(float32) * ...   the sampling coordinate (up to ``extent`` pixels) rounded in
                                    float32, which moves every bilinear weight by that much

where u is the unit roundoff (eps / 2). The tests use the norm-wise form, with ``scale`` = the
largest |float64 result| standing in for |y| and for the sums of absolute terms:

    tolerance = (u(dtype) + (n + 2 * extent + EXTRA_OPS) * u(float32)) * scale.

For the 16-bit dtypes the first term dominates (the others add a few percent for the sums and
maps of these tests, e.g. 393 terms per value-gradient element of the wide MSDA case), so a kernel
that summed in the 16-bit dtype instead -- error growing like sqrt(n) * u(dtype) -- fails it on a
long reduction; ``low_precision_sum`` emulates such a kernel so a test can show that the bound
really separates the two.
"""
import torch

# The dtypes the ops serve below float64, in the order tests report them.
REDUCED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Elementary operations around the sum (bilinear weights, products, the location chain rule).
EXTRA_OPS = 8


def unit_roundoff(dtype):
    return torch.finfo(dtype).eps / 2


def accumulation_dtype(dtype):
    """What the kernels compute in for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tolerance(dtype, terms, scale, extent):
    """Largest allowed max-abs error of a result of ``terms``-term sums over maps whose sampling
    coordinates reach ``extent`` pixels, see the module doc."""
    n = terms + 2 * extent + EXTRA_OPS
    return (unit_roundoff(dtype) + n * unit_roundoff(accumulation_dtype(dtype))) * scale


def max_error(ours, exact):
    """(max |ours - exact|, max |exact|) with ``ours`` compared in float64."""
    return (ours.double() - exact).abs().max().item(), exact.abs().max().item()


def assert_within(name, dtype, terms, extent, ours, exact):
    """ours (any dtype) against the float64 ``exact`` under ``tolerance``; returns error / scale."""
    assert ours.dtype == dtype, f"{name}: came back as {ours.dtype}, expected {dtype}"
    assert torch.isfinite(ours).all(), f"{name}: non-finite values"
    error, scale = max_error(ours, exact)
    assert scale > 0, f"{name}: the float64 result is all zeros, the case tests nothing"
    bound = tolerance(dtype, terms, scale, extent)
    assert error <= bound, (f"{name} in {dtype}: max error {error:.3e} > tolerance {bound:.3e} "
                            f"(scale {scale:.3e}, {terms}-term sums)")
    return error / scale


def low_precision_sum(contributions, dtype):
    """Sum the list of float64 ``contributions`` one by one in ``dtype`` (each addition rounded),
    as a kernel accumulating in the 16-bit dtype would; returned in float64."""
    total = torch.zeros_like(contributions[0], dtype=dtype)
    for part in contributions:
        total = total + part.to(dtype)
    return total.double()
