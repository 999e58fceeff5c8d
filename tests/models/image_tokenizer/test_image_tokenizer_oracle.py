"""Our Deformable-DETR encoder pieces against the `transformers` implementation (an independent oracle)."""
import pytest
import torch
from transformers import DeformableDetrConfig
from transformers.models.deformable_detr import modeling_deformable_detr as hf

from visionllm.models.image_tokenizer.deformable_transformer import (DeformableEncoderLayer,
                                                                     encoder_reference_points, valid_ratios)
from visionllm.models.image_tokenizer.positional_encoding import SinePositionalEncoding

C, HEADS, LEVELS, POINTS, FFN = 32, 4, 3, 2, 64
SHAPES = [(12, 10), (6, 5), (3, 3)]


def random_masks(batch: int):
    """Top-left aligned valid areas of random size on every level (as the tokenizer produces)."""
    masks = []
    valid = [(torch.randint(h // 2, h + 1, (1,)).item(), torch.randint(w // 2, w + 1, (1,)).item())
             for h, w in [SHAPES[0]] * batch]
    for h, w in SHAPES:
        mask = torch.ones(batch, h, w, dtype=torch.bool)
        for b, (vh, vw) in enumerate(valid):
            scale = h / SHAPES[0][0]
            mask[b, :max(1, round(vh * scale)), :max(1, round(vw * w / SHAPES[0][1]))] = False
        masks.append(mask)
    return masks


def test_reference_points_and_positional_encoding_match_transformers():
    torch.manual_seed(0)
    masks = random_masks(3)
    ratios = torch.stack([valid_ratios(m) for m in masks], 1)
    ours = encoder_reference_points(SHAPES, ratios)
    theirs = hf.DeformableDetrEncoder.get_reference_points(SHAPES, ratios, device=ratios.device)
    torch.testing.assert_close(ours, theirs)
    encoding = SinePositionalEncoding(num_feats=C // 2)
    hf_encoding = hf.DeformableDetrSinePositionEmbedding(num_position_features=C // 2, normalize=True)
    for mask in masks:
        expected = hf_encoding(torch.Size((mask.shape[0], C, *mask.shape[1:])), mask.device, torch.float32,
                               mask=(~mask).to(torch.float32))
        torch.testing.assert_close(encoding(mask), expected)


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_encoder_layer_matches_transformers_with_copied_weights(backend):
    import custom_ops

    torch.manual_seed(1)
    config = DeformableDetrConfig(d_model=C, encoder_attention_heads=HEADS, encoder_n_points=POINTS,
                                  num_feature_levels=LEVELS, encoder_ffn_dim=FFN, dropout=0.0,
                                  attention_dropout=0.0, activation_dropout=0.0, activation_function="relu")
    theirs = hf.DeformableDetrEncoderLayer(config).eval()
    ours = DeformableEncoderLayer(embed_dims=C, num_levels=LEVELS, num_heads=HEADS, num_points=POINTS,
                                  ffn_dims=FFN, dropout=0.0).eval()
    # random weights everywhere (the default init zeroes the sampling-offset weights)
    for p in theirs.parameters():
        torch.nn.init.normal_(p, std=0.2)
    names = {"self_attn.sampling_offsets": "self_attn.sampling_offsets",
             "self_attn.attention_weights": "self_attn.attention_weights",
             "self_attn.value_proj": "self_attn.value_proj", "self_attn.output_proj": "self_attn.output_proj",
             "norm1": "self_attn_layer_norm", "ffn.linear1": "mlp.fc1", "ffn.linear2": "mlp.fc2",
             "norm2": "final_layer_norm"}
    source = dict(theirs.named_parameters())
    copied = 0
    for name, param in ours.named_parameters():
        prefix, leaf = name.rsplit(".", 1)
        with torch.no_grad():
            param.copy_(source[f"{names[prefix]}.{leaf}"])
        copied += 1
    assert copied == len(source)

    batch = 2
    masks = random_masks(batch)
    spatial_shapes = torch.tensor(SHAPES, dtype=torch.long)
    level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
    seq = int(spatial_shapes.prod(1).sum())
    src = torch.randn(batch, seq, C)
    pos = torch.randn(batch, seq, C)
    padding = torch.cat([m.flatten(1) for m in masks], 1)
    ratios = torch.stack([valid_ratios(m) for m in masks], 1)
    reference = encoder_reference_points(SHAPES, ratios)

    previous = custom_ops.get_backend()
    custom_ops.set_backend(backend)
    try:
        with torch.no_grad():
            out = ours(src, pos, reference, spatial_shapes, level_start_index, padding)
            expected = theirs(src, attention_mask=~padding, spatial_position_embeddings=pos,
                              reference_points=reference, spatial_shapes=spatial_shapes,
                              spatial_shapes_list=SHAPES, level_start_index=level_start_index)
    finally:
        custom_ops.set_backend(previous)
    expected = expected[0] if isinstance(expected, tuple) else expected
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
