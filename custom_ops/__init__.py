"""Compiled operators of the VisionLLM toolkit: multi-scale deformable attention and DCNv3.

Each op is a small package: a C++ CPU kernel and a CUDA kernel sharing their per-element math,
a pure-PyTorch reference (test oracle and fallback), an autograd function and a module.
"""
