"""Benchmark workloads of DCNv3 at InternImage-T sizes.

A 224x224 image gives stage maps of 56/28/14/7 pixels (strides 4/8/16/32) with 64/128/256/512
channels in 4/8/16/32 groups, kernel 3. ``workload(case, impl, dtype)`` builds the inputs of one
stage and returns the forward and forward+backward callables of one implementation, for
``custom_ops.benchmarking``.
"""
import os

import torch

# name -> (label, map size, channels, groups) of InternImage-T at a 224x224 input
CASES = {
    "stage1": ("T stage1 56x56 C64 G4", 56, 64, 4),
    "stage2": ("T stage2 28x28 C128 G8", 28, 128, 8),
    "stage3": ("T stage3 14x14 C256 G16", 14, 256, 16),
    "stage4": ("T stage4 7x7 C512 G32", 7, 512, 32),
}
KERNEL = 3


def batch_size():
    """Images per call: ``DCNV3_BENCH_BATCH`` (default 8); read at call time so the memory-probe
    subprocess, which inherits the environment, uses the same batch."""
    return int(os.environ.get("DCNV3_BENCH_BATCH", "8"))


def workload(case, impl, dtype=torch.float32):
    """Inputs of one stage in ``dtype`` and the forward / forward+backward callables of ``impl``
    (``"ours"``: the compiled kernel, ``"reference"``: the grid_sample op)."""
    from .._extension import load_extension
    from .function import DCNv3Function
    from .reference import dcnv3_reference

    _, size, channels, group = CASES[case]
    batch, points = batch_size(), KERNEL * KERNEL
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, size, size, channels, generator=generator).to(dtype)
    # offsets of a few pixels, as a trained InternImage predicts; masks softmaxed per group
    offset = ((torch.rand(batch, size, size, group * points * 2, generator=generator) * 2 - 1) * 2.0).to(dtype)
    mask = torch.randn(batch, size, size, group, points, generator=generator).softmax(-1)
    mask = mask.reshape(batch, size, size, group * points).to(dtype)
    if impl == "ours":
        if load_extension("custom_ops.dcnv3._C") is None:
            raise SystemExit("custom_ops.dcnv3._C is not built: run `make ops`")
        op = DCNv3Function.apply
    else:
        op = dcnv3_reference
    geometry = (KERNEL, KERNEL, 1, 1, 1, 1, 1, 1, group, channels // group, 1.0)
    grad_out = torch.randn(batch, size, size, channels, generator=generator).to(dtype)

    def forward():
        with torch.no_grad():
            return op(x, offset, mask, *geometry)

    def forward_backward():
        leaves = [t.detach().requires_grad_(True) for t in (x, offset, mask)]
        op(*leaves, *geometry).backward(grad_out)
        return [t.grad for t in leaves]

    return {"forward": forward, "forward_backward": forward_backward}
