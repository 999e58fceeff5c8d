"""InternImage DCNv3: compiled CPU/CUDA kernel, grid_sample reference, autograd function, module."""
from .function import DCNv3Function, dcnv3
from .modules import DCNv3
from .reference import dcnv3_reference

__all__ = ["dcnv3", "dcnv3_reference", "DCNv3", "DCNv3Function"]
