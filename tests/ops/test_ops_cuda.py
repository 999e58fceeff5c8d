"""CUDA kernels of both ops against their CPU kernels.

float64: outputs and all gradients of the CUDA kernel equal the CPU kernel's up to summation
order (the CUDA backward accumulates with atomicAdd). float16 / bfloat16 / float32: the CUDA
kernel against the float64 CPU kernel on the same rounded inputs, within the bound of
op_precision.py. Every test skips, with the reason, when torch sees no GPU or the extension was
built without CUDA (``FORCE_CUDA=1 make ops`` builds it).
"""
import pytest
import torch

from custom_ops._extension import load_extension
from op_precision import REDUCED_DTYPES, assert_within
from test_dcnv3 import CASES as DCNV3_CASES
from test_dcnv3 import coordinate_extent as dcnv3_extent
from test_dcnv3 import make_inputs as dcnv3_inputs
from test_dcnv3 import out_size
from test_dcnv3 import rounded_inputs as dcnv3_rounded_inputs
from test_ms_deform_attn import CASES as MSDA_CASES
from test_ms_deform_attn import WIDE as MSDA_WIDE
from test_ms_deform_attn import coordinate_extent as msda_extent
from test_ms_deform_attn import make_inputs as msda_inputs
from test_ms_deform_attn import max_terms_per_value_element
from test_ms_deform_attn import rounded_inputs as msda_rounded_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device (torch.cuda.is_available() is False)")
DTYPE_IDS = [str(d).removeprefix("torch.") for d in REDUCED_DTYPES]
FLOAT64_TOLERANCE = 1e-10  # relative to the largest |value|: only the summation order differs


def cuda_extension(name):
    ext = load_extension(f"custom_ops.{name}._C")
    if ext is None:
        pytest.skip(f"custom_ops.{name}._C is not built (make ops)")
    if not getattr(ext, "with_cuda", False):
        pytest.skip(f"custom_ops.{name}._C was built without CUDA (rebuild with FORCE_CUDA=1 make ops)")
    return ext


@pytest.fixture(scope="module")
def msda():
    return cuda_extension("ms_deform_attn")


@pytest.fixture(scope="module")
def dcnv3_ext():
    return cuda_extension("dcnv3")


def on_cuda(tensors):
    return [t.cuda() for t in tensors]


def assert_close_float64(name, ours_cuda, cpu):
    assert ours_cuda.is_cuda and ours_cuda.dtype == torch.float64, name
    error = (ours_cuda.cpu() - cpu).abs().max().item()
    scale = cpu.abs().max().item()
    assert scale > 0, f"{name}: the CPU result is all zeros, the case tests nothing"
    assert error <= FLOAT64_TOLERANCE * scale, f"{name}: relative error {error / scale:.3e}"


@pytest.mark.parametrize("case", MSDA_CASES + [MSDA_WIDE])
def test_msda_cuda_equals_cpu_in_float64(msda, case):
    torch.manual_seed(0)
    batch, queries, heads, channels, shapes_list, points = case
    inputs = msda_inputs(batch, queries, heads, channels, shapes_list, points, torch.float64)
    grad_out = torch.randn(batch, queries, heads * channels, dtype=torch.float64)
    cpu = [msda.forward(*inputs)] + list(msda.backward(*inputs, grad_out))
    gpu_inputs = on_cuda(inputs)
    gpu = [msda.forward(*gpu_inputs)] + list(msda.backward(*gpu_inputs, grad_out.cuda()))
    for name, ours, reference in zip(("output", "grad value", "grad locations", "grad weights"), gpu, cpu):
        assert_close_float64(name, ours, reference)


@pytest.mark.parametrize("dtype", REDUCED_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", [MSDA_CASES[1], MSDA_WIDE], ids=["small", "wide"])
def test_msda_cuda_dtype_against_float64(msda, case, dtype):
    torch.manual_seed(1)
    _, _, _, channels, shapes_list, points = case
    low, shapes, starts, grad_out, exact = msda_rounded_inputs(case, dtype)
    gpu = on_cuda([low[0], shapes, starts, low[1], low[2]])
    results = [msda.forward(*gpu)] + list(msda.backward(*gpu, grad_out.cuda()))
    terms = [4 * len(shapes_list) * points, max_terms_per_value_element(shapes, starts, low[1], low[0].shape[1]),
             4 * channels, 4 * channels]
    for name, n, ours, reference in zip(("output", "grad value", "grad locations", "grad weights"), terms, results,
                                        exact):
        assert ours.is_cuda, name
        assert_within(name, dtype, n, msda_extent(shapes_list), ours.cpu(), reference)


def dcnv3_args(case):
    batch, h, w, group, cg, k, s, p, d, scale, rng = case
    return (k, k, s, s, p, p, d, d, group, cg, scale)


@pytest.mark.parametrize("case", DCNV3_CASES)
def test_dcnv3_cuda_equals_cpu_in_float64(dcnv3_ext, case):
    gen = torch.Generator().manual_seed(0)
    batch, h, w, group, cg, k, s, p, d, scale, rng = case
    inputs = dcnv3_inputs(gen, batch, h, w, group, cg, k, s, p, d, torch.float64, rng)
    grad_out = torch.randn(batch, out_size(h, k, s, p, d), out_size(w, k, s, p, d), group * cg, generator=gen,
                           dtype=torch.float64)
    args = dcnv3_args(case)
    cpu = [dcnv3_ext.forward(*inputs, *args)] + list(dcnv3_ext.backward(*inputs, grad_out, *args))
    gpu_inputs = on_cuda(inputs)
    gpu = [dcnv3_ext.forward(*gpu_inputs, *args)] + list(dcnv3_ext.backward(*gpu_inputs, grad_out.cuda(), *args))
    for name, ours, reference in zip(("output", "grad input", "grad offset", "grad mask"), gpu, cpu):
        if reference.abs().max() == 0:  # e.g. every sample far outside the map: both must be zero
            assert torch.count_nonzero(ours) == 0, name
            continue
        assert_close_float64(name, ours, reference)


@pytest.mark.parametrize("dtype", REDUCED_DTYPES, ids=DTYPE_IDS)
def test_dcnv3_cuda_dtype_against_float64(dcnv3_ext, dtype):
    from test_dcnv3 import WIDE, max_terms_per_input_element

    gen = torch.Generator().manual_seed(1)
    batch, h, w, group, cg, k, s, p, d, scale, rng = WIDE
    low, grad_out, exact = dcnv3_rounded_inputs(gen, WIDE, dtype)
    args = dcnv3_args(WIDE)
    gpu = on_cuda(low)
    results = [dcnv3_ext.forward(*gpu, *args)] + list(dcnv3_ext.backward(*gpu, grad_out.cuda(), *args))
    terms = [4 * k * k, max_terms_per_input_element(low[1], h, w, k, s, p, d, group, scale), 4 * cg, 4 * cg]
    for name, n, ours, reference in zip(("output", "grad input", "grad offset", "grad mask"), terms, results, exact):
        assert ours.is_cuda, name
        assert_within(name, dtype, n, dcnv3_extent(WIDE), ours.cpu(), reference)
