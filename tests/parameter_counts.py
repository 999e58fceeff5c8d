"""Closed-form parameter counts of the published backbones, text encoder and tokenizer,
written from the papers' layer shapes, to check built models against."""


def resnet_params(depth: int) -> int:
    """ResNet without its classifier: stem, 4 stages of basic (18/34) or bottleneck (50/101) blocks."""
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    bottleneck = depth >= 50
    expansion = 4 if bottleneck else 1
    total = 3 * 64 * 7 * 7 + 2 * 64  # conv1 + bn1
    inplanes = 64
    for stage, num in enumerate(blocks):
        planes = 64 * 2 ** stage
        for i in range(num):
            if bottleneck:
                total += inplanes * planes + 2 * planes + 9 * planes * planes + 2 * planes
                total += planes * 4 * planes + 2 * 4 * planes
            else:
                total += 9 * inplanes * planes + 2 * planes + 9 * planes * planes + 2 * planes
            if i == 0 and (stage > 0 or inplanes != planes * expansion):
                total += inplanes * planes * expansion + 2 * planes * expansion  # downsample conv + bn
            inplanes = planes * expansion
    return total


def projection_params(in_channels, embed_dims: int, num_extra_levels: int = 1) -> int:
    """1x1 conv + GroupNorm per level, 3x3 stride-2 conv + GroupNorm per extra level."""
    total = sum(c * embed_dims + embed_dims + 2 * embed_dims for c in in_channels)
    extra_in = [in_channels[-1]] + [embed_dims] * (num_extra_levels - 1)
    return total + sum(9 * c * embed_dims + embed_dims + 2 * embed_dims for c in extra_in[:num_extra_levels])


def dcnv3_params(c: int, g: int, dw_kernel: int, center_feature_scale: bool, kernel: int = 3) -> int:
    points = kernel * kernel
    total = 2 * (c * c + c)                      # input_proj, output_proj
    total += c * dw_kernel * dw_kernel + c + 2 * c  # depthwise conv + LayerNorm
    total += c * g * points * 2 + g * points * 2  # offsets
    total += c * g * points + g * points          # mask logits
    if center_feature_scale:
        total += g * c + g
    return total


def internimage_params(channels, depths, groups, layer_scale=None, post_norm=False, dw_kernel_size=None,
                       res_post_norm=False, center_feature_scale=False, level2_post_norm=False,
                       level2_post_norm_block_ids=None, mlp_ratio=4.0, **_) -> int:
    half = channels // 2
    total = 3 * half * 9 + half + 2 * half + half * channels * 9 + channels + 2 * channels  # stem
    for i, (depth, g) in enumerate(zip(depths, groups)):
        c = channels * 2 ** i
        hidden = int(c * mlp_ratio)
        layer = 2 * c + dcnv3_params(c, g, dw_kernel_size or 3, center_feature_scale) + 2 * c
        layer += c * hidden + hidden + hidden * c + c
        layer += 2 * c if layer_scale is not None else 0
        layer += 4 * c if res_post_norm else 0
        total += depth * layer
        if not post_norm or center_feature_scale:
            total += 2 * c  # level norm
        if level2_post_norm and i == 2:
            total += 2 * c * len(level2_post_norm_block_ids)
        if i < len(depths) - 1:
            total += 9 * c * 2 * c + 2 * 2 * c  # downsampling conv (no bias) + LayerNorm
    return total


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


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
