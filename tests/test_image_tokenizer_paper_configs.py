"""The paper-size tokenizers (R50 and InternImage-H, BERT-base, 6+6 layers, M=100) build on `meta`
with the parameter counts the architecture formulas give."""
import pytest
import torch
from test_backbones import INTERNIMAGE_VARIANTS, internimage_params, projection_params, resnet_params

from visionllm.registry import MODELS

import visionllm.models.image_tokenizer  # noqa: F401  (registers the modules)

BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def paper_tokenizer(backbone):
    return dict(type="ImageTokenizer", embed_dims=256, backbone=backbone,
                # the architecture of bert-base (weights would come from a local bert-base directory)
                text_encoder=dict(pretrained=False, config_overrides=BERT_BASE, trainable=True),
                fusion=dict(num_heads=8),
                transformer=dict(num_heads=8, num_points=4, ffn_dims=1024, num_encoder_layers=6,
                                 num_decoder_layers=6, num_queries=100, iterative_refinement=True))


def bert_params(vocab=30522, hidden=768, layers=12, intermediate=3072, positions=512, types=2) -> int:
    embeddings = (vocab + positions + types) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden + hidden * intermediate + intermediate
    layer += intermediate * hidden + hidden + 2 * hidden
    return embeddings + layers * layer  # no pooler (unused)


def ms_deform_attn_params(c, levels, heads, points) -> int:
    samples = heads * levels * points
    return c * samples * 2 + samples * 2 + c * samples + samples + 2 * (c * c + c)


def transformer_params(c=256, levels=4, heads=8, points=4, ffn=1024, enc=6, dec=6, queries=100, refine=True):
    ffn_params = c * ffn + ffn + ffn * c + c
    enc_layer = ms_deform_attn_params(c, levels, heads, points) + 2 * c + ffn_params + 2 * c
    dec_layer = (3 * c * c + 3 * c + c * c + c) + 2 * c + ms_deform_attn_params(c, levels, heads, points)
    dec_layer += 2 * c + ffn_params + 2 * c
    total = enc * enc_layer + dec * dec_layer + levels * c + queries * 2 * c + (c * 2 + 2)
    if refine:  # 3-layer MLP per decoder layer
        total += dec * (2 * (c * c + c) + 2 * c + 2)
    return total


def relational_alignment_params(c=256, layers=2, ffn=256, point_feats=16) -> int:
    token_proj = 2 * c + c * c + c              # LayerNorm + Linear
    name_proj = c * c + c
    point_proj = 2 * point_feats * c + c
    logit_proj = 2 * c + c                      # (probability, squashed margin) → c
    side_proj = 5 * c + c
    name_sides = 5 * c + 5
    word_sides = c * c + c + 5 * c + 5
    layer = (3 * c * c + 3 * c) + (c * c + c) + (c * ffn + ffn) + (ffn * c + c) + 4 * c  # pre-norm encoder layer
    out = 2 * c + c + 1
    return token_proj + name_proj + point_proj + logit_proj + side_proj + name_sides + word_sides + layers * layer + out


def tokenizer_params(backbone_params, c=256, levels=4, text_hidden=768) -> int:
    fusion = levels * (4 * c * c + 4 * c + 2 * c)
    text = bert_params() + text_hidden * c + c + 2 * c
    objectness = c + 1
    name_alignment = c * c + c + 1  # name query projection + logit bias
    token_position = 64 * c + c     # sine features of (cx, cy), 32 frequencies each → c
    token_appearance = 27 * c + c   # RGB on a 3x3 grid around each point → c
    return (backbone_params + text + fusion + transformer_params(c, levels) + objectness + name_alignment
            + token_position + token_appearance + relational_alignment_params(c))


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


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
