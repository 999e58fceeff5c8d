"""Backbones of the image tokenizer: ResNet (timm) and InternImage (DCNv3)."""
import math

import pytest
import timm
import torch

import custom_ops
from parameter_counts import count, internimage_params, projection_params, resnet_params
from visionllm.models.image_tokenizer.backbones import (INTERNIMAGE_VARIANTS, InternImage, InternImageBackbone,
                                                        ResNetBackbone)
from visionllm.registry import MODELS


# ----------------------------------------------------------------------------------------------
# parameter counts computed from the architecture formulas (independent of the module code)


# ----------------------------------------------------------------------------------------------
# ResNet

@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_backbone_levels_and_parameter_count(depth):
    backbone = MODELS.build(dict(type="ResNetBackbone", depth=depth, embed_dims=32))
    widths = [128, 256, 512] if depth == 18 else [512, 1024, 2048]
    assert backbone.in_channels == widths and backbone.strides == [8, 16, 32, 64]
    assert count(backbone) == resnet_params(depth) + projection_params(widths, 32)
    h, w = 72, 100
    with torch.no_grad():
        outs = backbone.eval()(torch.randn(2, 3, h, w))
    assert [tuple(o.shape) for o in outs] == [
        (2, 32, math.ceil(h / s), math.ceil(w / s)) for s in (8, 16, 32, 64)]


def test_resnet_frozen_stages_and_norm_eval():
    backbone = ResNetBackbone(depth=18, embed_dims=16, frozen_stages=1, norm_eval=True)
    backbone.train()
    body = backbone.body
    assert not any(p.requires_grad for p in body.conv1.parameters())
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert body.layer2[0].conv1.weight.requires_grad and body.layer4[1].conv2.weight.requires_grad
    assert all(p.requires_grad for p in backbone.projection.parameters())
    bns = [m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not bn.training and not bn.weight.requires_grad for bn in bns)
    stats = body.layer3[0].bn1.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(body.layer3[0].bn1.running_mean, stats)  # batch stats not tracked

    frozen = ResNetBackbone(depth=18, embed_dims=16, freeze=True).train()
    assert not any(p.requires_grad for p in frozen.body.parameters())
    assert all(p.requires_grad for p in frozen.projection.parameters())


def test_resnet_local_checkpoint_loads_and_reports_keys(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)
    state = source.state_dict()
    del state["layer4.1.bn2.weight"]
    state["not_a_resnet.weight"] = torch.zeros(3)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": state}, path)
    backbone = ResNetBackbone(depth=18, embed_dims=16, checkpoint=str(path))
    torch.testing.assert_close(backbone.body.layer2[0].conv1.weight, source.layer2[0].conv1.weight)
    missing, unexpected = backbone.load_checkpoint(str(path))
    assert missing == ["layer4.1.bn2.weight"]
    assert set(unexpected) == {"not_a_resnet.weight", "fc.weight", "fc.bias"}


# ----------------------------------------------------------------------------------------------
# InternImage

VARIANTS = list(INTERNIMAGE_VARIANTS)


TINY_DEPTHS = (1, 1, 2, 1)


def tiny_variant(variant: str, **overrides) -> InternImage:
    """A published variant (residual options, offset scale, ...) with few layers per level."""
    args = dict(variant=variant, depths=TINY_DEPTHS, drop_path_rate=0.0)
    if INTERNIMAGE_VARIANTS[variant].get("level2_post_norm"):
        args["level2_post_norm_block_ids"] = (0,)
    args.update(overrides)
    return InternImage(**args)


@pytest.mark.parametrize("variant", VARIANTS)
def test_internimage_variant_shapes_on_meta(variant):
    """Published widths and groups, few layers: level shapes and size, without allocating weights."""
    with torch.device("meta"):
        model = tiny_variant(variant).eval()
    spec = INTERNIMAGE_VARIANTS[variant]
    assert count(model) == internimage_params(**{**spec, "depths": TINY_DEPTHS, "level2_post_norm_block_ids": (0,)})
    previous = custom_ops.get_backend()
    custom_ops.set_backend("reference")  # the reference op is written in torch ops, which have meta kernels
    try:
        outs = model(torch.empty(1, 3, 64, 96, device="meta"))
    finally:
        custom_ops.set_backend(previous)
    assert [tuple(o.shape) for o in outs] == [
        (1, spec["channels"] * 2 ** i, 64 // 4 // 2 ** i, 96 // 4 // 2 ** i) for i in range(4)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_internimage_variant_options_forward_and_backward(variant):
    """Each variant's options (post-norm, layer scale, res-post-norm, ...) at a tiny width on real data."""
    torch.manual_seed(0)
    model = tiny_variant(variant, channels=16, groups=(2, 4, 8, 16)).train()
    outs = model(torch.randn(2, 3, 32, 48))
    assert [tuple(o.shape) for o in outs] == [
        (2, 16 * 2 ** i, math.ceil(32 / 4 / 2 ** i), math.ceil(48 / 4 / 2 ** i)) for i in range(4)]
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.square().mean() for o in outs).backward()
    assert model.patch_embed.conv1.weight.grad.abs().sum() > 0
    assert model.levels[3].blocks[0].mlp.fc2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_internimage_published_variants_build_on_meta_with_expected_size(variant):
    with torch.device("meta"):
        model = InternImage(variant=variant)
    expected = internimage_params(**INTERNIMAGE_VARIANTS[variant])
    print(f"InternImage-{variant}: {count(model) / 1e6:.2f} M parameters (formula {expected / 1e6:.2f} M)")
    assert count(model) == expected


def test_internimage_options_are_used():
    small = dict(channels=16, groups=(2, 4, 8, 16))
    h = tiny_variant("H", **small)
    layer = h.levels[2].blocks[0]
    assert layer.res_post_norm and not layer.layer_scale and layer.dcn.center_feature_scale
    assert layer.dcn.dw_conv[0].kernel_size == (5, 5)
    assert len(h.levels[2].post_norms) == 1 and not hasattr(h.levels[1], "post_norms")
    s = tiny_variant("S", **small)
    assert s.levels[0].blocks[0].post_norm and s.levels[0].blocks[0].layer_scale
    assert not s.levels[0].has_final_norm
    assert tiny_variant("L", **small).levels[0].blocks[0].dcn.offset_scale == 2.0
    # post-norm puts the norm after each branch and scales the branch by gamma
    torch.manual_seed(0)
    layer = s.levels[0].blocks[0].eval()
    x = torch.randn(1, 4, 4, 16)
    with torch.no_grad():
        expected = x + layer.gamma1 * layer.norm1(layer.dcn(x))
        expected = expected + layer.gamma2 * layer.norm2(layer.mlp(expected))
        torch.testing.assert_close(layer(x), expected)
    # res-post-norm (H): pre-norm branch followed by its own norm, no layer scale
    layer = h.levels[0].blocks[0].eval()
    with torch.no_grad():
        expected = x + layer.res_post_norm1(layer.dcn(layer.norm1(x)))
        expected = expected + layer.res_post_norm2(layer.mlp(layer.norm2(expected)))
        torch.testing.assert_close(layer(x), expected)


def test_internimage_freezing_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    kwargs = dict(channels=16, depths=(1, 1, 1, 1), groups=(2, 4, 8, 16), drop_path_rate=0.0)
    model = InternImage(frozen_stages=2, norm_eval=True, **kwargs).train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for lvl in model.levels[:2] for p in lvl.parameters())
    assert model.levels[2].blocks[0].dcn.offset.weight.requires_grad
    assert not model.levels[3].blocks[0].norm1[0].weight.requires_grad  # norm_eval
    assert not model.levels[0].training and model.levels[2].training
    whole = InternImage(freeze=True, **kwargs).train()
    assert not any(p.requires_grad for p in whole.parameters())

    source = InternImage(**kwargs)
    state = {"backbone." + k: v for k, v in source.state_dict().items()}
    del state["backbone.levels.1.blocks.0.mlp.fc1.weight"]
    state["backbone.head.weight"] = torch.zeros(2)
    state["neck.conv.weight"] = torch.zeros(2)  # other parts of a detector are ignored
    path = tmp_path / "internimage.pth"
    torch.save({"state_dict": state}, path)
    target = InternImage(**kwargs)
    missing, unexpected = target.load_checkpoint(str(path))
    assert missing == ["levels.1.blocks.0.mlp.fc1.weight"] and unexpected == ["head.weight"]
    torch.testing.assert_close(target.levels[2].blocks[0].dcn.offset.weight, source.levels[2].blocks[0].dcn.offset.weight)


def test_internimage_backbone_levels_for_the_tokenizer():
    backbone = InternImageBackbone(embed_dims=32, channels=16, depths=(1, 1, 1, 1), groups=(2, 4, 8, 16))
    assert backbone.strides == [8, 16, 32, 64] and backbone.in_channels == [32, 64, 128]
    with torch.no_grad():
        outs = backbone.eval()(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 64 // s, math.ceil(96 / s)) for s in (8, 16, 32, 64)]
    frozen = InternImageBackbone(embed_dims=32, channels=16, depths=(1, 1, 1, 1), groups=(2, 4, 8, 16), freeze=True)
    assert not any(p.requires_grad for p in frozen.body.parameters())


@pytest.mark.slow
def test_internimage_t_224_forward_through_compiled_dcnv3():
    """InternImage-T (full depth) on a 224x224 image on CPU; the compiled kernel agrees with the reference."""
    from custom_ops._extension import load_extension

    torch.manual_seed(0)
    model = InternImage(variant="T").eval()
    # trained models have non-zero offsets: exercise real deformable sampling
    for m in model.modules():
        if type(m).__name__ == "DCNv3":
            torch.nn.init.normal_(m.offset.weight, std=0.02)
            torch.nn.init.normal_(m.mask.weight, std=0.02)
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outs = model(image)
    assert [tuple(o.shape) for o in outs] == [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    assert all(torch.isfinite(o).all() for o in outs)
    if load_extension("custom_ops.dcnv3._C") is not None and custom_ops.get_backend() == "compiled":
        custom_ops.set_backend("reference")
        try:
            with torch.no_grad():
                reference = model(image)
        finally:
            custom_ops.set_backend(None)
        for ours, ref in zip(outs, reference):
            torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-3)
