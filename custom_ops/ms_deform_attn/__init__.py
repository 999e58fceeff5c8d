"""Multi-scale deformable attention (Deformable-DETR): compiled CPU / CUDA kernels, a grid_sample
reference used as oracle and fallback, the autograd function and the ``MSDeformAttn`` module."""
from .function import MSDeformAttnFunction, ms_deform_attn
from .modules import MSDeformAttn
from .reference import ms_deform_attn_reference

__all__ = ["ms_deform_attn", "ms_deform_attn_reference", "MSDeformAttn", "MSDeformAttnFunction"]
