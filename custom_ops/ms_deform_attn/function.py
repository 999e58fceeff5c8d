"""Autograd function and the ``ms_deform_attn`` entry point (compiled kernel or reference)."""
import torch
from torch.autograd.function import once_differentiable

from .. import get_backend
from .._dtypes import common_float_inputs
from .._extension import load_extension
from .reference import ms_deform_attn_reference


def _extension():
    return load_extension("custom_ops.ms_deform_attn._C")


class MSDeformAttnFunction(torch.autograd.Function):
    """Multi-scale deformable attention through the compiled kernel.

    Gradients flow to value, sampling locations and attention weights (first order only:
    the backward kernel is itself not differentiable).
    """

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        ext = _extension()
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ext.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = _extension().backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output.contiguous()
        )
        return grad_value, None, None, grad_locations, grad_weights


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Multi-scale deformable attention.

    value [B, S, H, D] (levels concatenated along S), spatial_shapes [L, 2] long (H, W),
    level_start_index [L] long, sampling_locations [B, Q, H, L, P, 2] (x, y) in [0, 1] over the
    padded map, attention_weights [B, Q, H, L, P] -> output [B, Q, H*D].

    value, sampling_locations and attention_weights share one dtype: float16, bfloat16, float32 or
    float64 (16-bit inputs are computed in float32; the output has the inputs' dtype). Under
    ``torch.autocast`` inputs of different dtypes are promoted to the widest (see
    ``custom_ops._dtypes``); any other dtype mix is a ``TypeError``.

    Runs the compiled kernel when it is built and ``custom_ops.get_backend()`` is ``'compiled'``,
    otherwise the grid_sample reference (same semantics, slower, more memory).
    """
    value, sampling_locations, attention_weights = common_float_inputs(
        "ms_deform_attn", value=value, sampling_locations=sampling_locations, attention_weights=attention_weights)
    if get_backend() == "compiled" and _extension() is not None:
        return MSDeformAttnFunction.apply(value, spatial_shapes, level_start_index, sampling_locations,
                                          attention_weights)
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
