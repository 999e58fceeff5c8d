"""Autograd function and the ``dcnv3`` entry point (compiled kernel, or the reference as fallback)."""
import warnings

import torch
from torch.autograd.function import once_differentiable

from .. import get_backend
from .._dtypes import common_float_inputs
from .._extension import load_extension
from .reference import dcnv3_reference


def _compiled():
    return load_extension("custom_ops.dcnv3._C")


_warned_no_cuda = False


def _use_reference(input):
    """True when the call must go to the reference: backend switch, no build, or a CUDA tensor
    with a CPU-only build (one warning)."""
    global _warned_no_cuda
    ext = _compiled()
    if get_backend() == "reference" or ext is None:
        return True
    if input.is_cuda and not getattr(ext, "with_cuda", False):
        if not _warned_no_cuda:
            warnings.warn("custom_ops.dcnv3._C was built without CUDA (FORCE_CUDA=1); CUDA tensors use the "
                          "pure-PyTorch reference", RuntimeWarning, stacklevel=3)
            _warned_no_cuda = True
        return True
    return False


class DCNv3Function(torch.autograd.Function):
    """Calls the C++/CUDA kernel; gradients for input, offset and mask (first order only)."""

    @staticmethod
    def forward(ctx, input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                dilation_w, group, group_channels, offset_scale):
        ctx.geometry = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                        group_channels, float(offset_scale))
        ctx.save_for_backward(input, offset, mask)
        return _compiled().forward(input, offset, mask, *ctx.geometry)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, offset, mask = ctx.saved_tensors
        grad_input, grad_offset, grad_mask = _compiled().backward(
            input, offset, mask, grad_output.contiguous(), *ctx.geometry)
        return (grad_input, grad_offset, grad_mask) + (None,) * 11


def dcnv3(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
          group, group_channels, offset_scale):
    """DCNv3 (InternImage semantics). input ``[N, H, W, G*Cg]`` NHWC, offset ``[N, Ho, Wo, G*Kh*Kw*2]``
    as (x, y) pairs, mask ``[N, Ho, Wo, G*Kh*Kw]`` already softmaxed → ``[N, Ho, Wo, G*Cg]``.

    Tensors must be contiguous, on one device and of one dtype: float16, bfloat16, float32 or
    float64 (16-bit inputs are computed in float32; the output has the inputs' dtype). Under
    ``torch.autocast`` inputs of different dtypes are promoted to the widest (see
    ``custom_ops._dtypes``); any other dtype mix is a ``TypeError``. Uses the compiled kernel
    unless it is not built or ``custom_ops.get_backend()`` is ``'reference'``.
    """
    input, offset, mask = common_float_inputs("dcnv3", input=input, offset=offset, mask=mask)
    args = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
            group_channels, offset_scale)
    if _use_reference(input):
        return dcnv3_reference(input, offset, mask, *args)
    return DCNv3Function.apply(input, offset, mask, *args)
