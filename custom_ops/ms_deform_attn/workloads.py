"""Benchmark workloads of multi-scale deformable attention at Deformable-DETR sizes.

``workload(case, impl, dtype)`` builds the inputs of one size (see ``CASES``) and returns the
forward and forward+backward callables of one implementation, for ``custom_ops.benchmarking``.
"""
import torch

# name -> (label, image size, queries or None for "all positions" (encoder))
CASES = {
    "enc512": ("encoder 512x512", (512, 512), None),
    "enc800": ("encoder 800x1333", (800, 1333), None),
    "dec300": ("decoder 300q 800x1333", (800, 1333), 300),
}
SIZES = dict(batch=2, embed_dims=256, heads=8, points=4)


def levels_of(height, width, strides=(8, 16, 32, 64)):
    """Feature-map sizes of a padded image at the backbone strides (ceil division, like a conv stem)."""
    return [(-(-height // s), -(-width // s)) for s in strides]


def sampling_locations(shapes_list, batch, queries, heads, points, encoder, generator):
    """Sampling locations distributed as in Deformable-DETR: each query samples around its own
    reference point (memory access is local, as in a real model, not uniformly random).

    Encoder: the reference point of a query is its own pixel centre; the p-th point of a head lies
    about p+1 pixels out in the head's direction (the layer's initialisation) plus 2 pixels of
    jitter, on every level. Decoder: a random box per query, points spread over the box.
    """
    levels = len(shapes_list)
    wh = torch.tensor([[w, h] for h, w in shapes_list], dtype=torch.float32)  # [L, 2]
    if encoder:
        refs = []
        for h, w in shapes_list:
            ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            refs.append(torch.stack([xs.flatten() / w, ys.flatten() / h], -1))
        refs = torch.cat(refs)[None, :, None, None, None, :]  # [1, Q, 1, 1, 1, 2]
        angles = torch.arange(heads) * (2 * torch.pi / heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        steps = torch.arange(1, points + 1, dtype=torch.float32)
        init = directions[:, None, None, :] * steps[None, None, :, None]  # [H, 1, P, 2] pixels
        jitter = 2.0 * torch.randn(batch, queries, heads, levels, points, 2, generator=generator)
        return (refs + (init + jitter) / wh[None, None, None, :, None, :]).contiguous()
    centres = torch.rand(batch, queries, 1, 1, 1, 2, generator=generator)
    sizes = 0.05 + 0.45 * torch.rand(batch, queries, 1, 1, 1, 2, generator=generator)
    spread = torch.rand(batch, queries, heads, levels, points, 2, generator=generator) - 0.5
    return (centres + spread * sizes).contiguous()


def workload(case, impl, dtype=torch.float32):
    """Inputs of one size in ``dtype`` and the forward / forward+backward callables of ``impl``
    (``"ours"``: the compiled kernel, ``"reference"``: the grid_sample op)."""
    from .._extension import load_extension
    from .function import MSDeformAttnFunction
    from .reference import ms_deform_attn_reference

    _, (height, width), queries = CASES[case]
    shapes_list = levels_of(height, width)
    spatial_shapes = torch.tensor(shapes_list, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    spatial = int(sizes.sum())
    queries = spatial if queries is None else queries
    b, h, p = SIZES["batch"], SIZES["heads"], SIZES["points"]
    d, levels = SIZES["embed_dims"] // h, len(shapes_list)
    generator = torch.Generator().manual_seed(0)
    value = torch.randn(b, spatial, h, d, generator=generator).to(dtype)
    locations = sampling_locations(shapes_list, b, queries, h, p, encoder=CASES[case][2] is None,
                                   generator=generator).to(dtype)
    weights = torch.rand(b, queries, h, levels, p, generator=generator).softmax(-1).to(dtype)
    if impl == "ours":
        if load_extension("custom_ops.ms_deform_attn._C") is None:
            raise SystemExit("custom_ops.ms_deform_attn._C is not built: run `make ops`")
        op = MSDeformAttnFunction.apply
    else:
        op = ms_deform_attn_reference
    grad_out = torch.randn(b, queries, h * d, generator=generator).to(dtype)

    def forward():
        with torch.no_grad():
            return op(value, spatial_shapes, level_start_index, locations, weights)

    def forward_backward():
        leaves = [t.detach().requires_grad_(True) for t in (value, locations, weights)]
        out = op(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
        out.backward(grad_out)
        return [t.grad for t in leaves]

    return {"forward": forward, "forward_backward": forward_backward}
