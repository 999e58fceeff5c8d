"""The paper-size tokenizers (R50 and InternImage-H, BERT-base, 6+6 layers, M=100) build on `meta`
with the parameter counts the architecture formulas give."""
import pytest
import torch
from parameter_counts import (BERT_BASE, count, internimage_params, projection_params, resnet_params,
                              tokenizer_params, transformer_params)

from visionllm.models.image_tokenizer.backbones import INTERNIMAGE_VARIANTS
from visionllm.registry import MODELS

import visionllm.models.image_tokenizer  # noqa: F401  (registers the modules)


def paper_tokenizer(backbone):
    return dict(type="ImageTokenizer", embed_dims=256, backbone=backbone,
                # the architecture of bert-base (weights would come from a local bert-base directory)
                text_encoder=dict(pretrained=False, config_overrides=BERT_BASE, trainable=True),
                fusion=dict(num_heads=8),
                transformer=dict(num_heads=8, num_points=4, ffn_dims=1024, num_encoder_layers=6,
                                 num_decoder_layers=6, num_queries=100, iterative_refinement=True))


@pytest.mark.parametrize("name", ["R50", "InternImage-H"])
def test_paper_tokenizer_builds_on_meta_with_expected_size(name):
    if name == "R50":
        backbone = dict(type="ResNetBackbone", depth=50)
        expected_backbone = resnet_params(50) + projection_params([512, 1024, 2048], 256)
    else:
        backbone = dict(type="InternImageBackbone", variant="H")
        expected_backbone = (internimage_params(**INTERNIMAGE_VARIANTS["H"])
                             + projection_params([640, 1280, 2560], 256))
    with torch.device("meta"):
        model = MODELS.build(paper_tokenizer(backbone))
    assert next(model.parameters()).is_meta
    parts = {part: count(getattr(model, part)) for part in ("backbone", "text_encoder", "fusion", "transformer")}
    print(f"{name} tokenizer: {count(model) / 1e6:.2f} M parameters; "
          + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in parts.items()))
    assert parts["backbone"] == expected_backbone
    assert parts["transformer"] == transformer_params()
    assert count(model) == tokenizer_params(expected_backbone)
    assert model.transformer.num_queries == 100 and len(model.transformer.encoder_layers) == 6
