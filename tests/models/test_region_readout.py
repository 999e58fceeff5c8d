"""RegionReadout: what it pools, that it follows the box, and that it starts at zero; and the
region's place in the LLM prompt (location tokens at the placeholder, read-out added there)."""
import pytest
import torch

from visionllm.models.region_readout import RegionReadout


def coordinate_memory(shapes, valid_ratios):
    """Memory whose channels 0 / 1 hold the x / y (in [0, 1] of the image's valid area) of each
    cell centre, on every level of a padded batch image: pooling it inside a box gives the box
    centre when the read-out samples the right place."""
    levels, starts, start = [], [], 0
    for (h, w), (rx, ry) in zip(shapes, valid_ratios):
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        levels.append(torch.stack([xs / rx, ys / ry], -1).reshape(h * w, 2))
        starts.append(start)
        start += h * w
    return dict(memory=torch.cat(levels)[None].double(), spatial_shapes=torch.tensor(shapes),
                level_start_index=torch.tensor(starts), valid_ratios=torch.tensor([valid_ratios]).double())


def test_pools_the_memory_inside_the_box_of_the_valid_area():
    # an image filling 0.5 x 0.75 of the padded map: the box is read in the image's own frame
    features = coordinate_memory([(16, 32), (8, 16)], [(0.5, 0.75), (0.5, 0.75)])
    readout = RegionReadout(embed_dims=2, hidden_size=3, grid_size=4).double()
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.4], [0.6, 0.5, 0.9, 0.95]], dtype=torch.float64)
    pooled = readout.pooled(features, 0, boxes)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert torch.allclose(pooled.double(), centres, atol=1e-4)


def test_zero_at_init_and_follows_the_box():
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 12), (4, 6)]
    features = dict(memory=torch.randn(2, 8 * 12 + 4 * 6, 16, generator=g), spatial_shapes=torch.tensor(shapes),
                    level_start_index=torch.tensor([0, 96]), valid_ratios=torch.ones(2, 2, 2))
    readout = RegionReadout(embed_dims=16, hidden_size=8)
    readout.init_weights()
    box = torch.tensor([[0.1, 0.1, 0.4, 0.5]])
    out = readout(features, [box, torch.zeros(0, 4)])
    assert out[0].shape == (1, 8) and out[1].shape == (0, 8)
    assert torch.count_nonzero(out[0]) == 0  # exactly nothing until trained
    with torch.no_grad():
        readout.projection.weight.normal_(generator=g)
    same = readout(features, [box])[0]
    moved = readout(features, [box + torch.tensor([0.3, 0.2, 0.3, 0.2])])[0]
    other_image = readout(features, [torch.zeros(0, 4), box])[1]
    assert torch.equal(same, readout(features, [box])[0])
    assert (moved - same).abs().max() > 1e-3
    assert (other_image - same).abs().max() > 1e-3  # row b reads image b


# ---------------------------------------------------------------- the region in the prompt
@pytest.fixture(scope="module")
def decoder(tiny_llama_dir):
    from tiny_llm import build_decoder
    return build_decoder(tiny_llama_dir).eval()


def region_sample(instruction, regions, img_shape=(60, 100)):
    from tiny_llm import make_sample
    sample = make_sample("caption", instruction, target_text="a red star", img_shape=img_shape)
    sample.set_metainfo(dict(regions=regions))
    return sample


def test_the_region_reaches_the_llm_at_its_placeholder(decoder):
    from visionllm.instructions import LocationCodec
    from visionllm.instructions.regions import region_bins

    instruction = "<image> Describe <region> next to <region> please."
    regions = [[10.0, 5.0, 40.0, 30.0], [50.0, 20.0, 99.0, 59.0]]
    sample = region_sample(instruction, regions)
    image = torch.randn(6, decoder.hidden_size)
    vectors = torch.randn(2, decoder.hidden_size)
    sample.region_embeds = vectors
    batch = decoder._assemble([decoder._prompt_segments(instruction, image, regions=decoder._region_prompt(sample))])
    ids = batch.input_ids[0].tolist()

    codec = LocationCodec(decoder.special.num_bins)
    expected = decoder.location_ids[region_bins(codec, torch.tensor(regions), (100, 60))].tolist()
    location = set(decoder.location_ids.tolist())
    where = [i for i, t in enumerate(ids) if t in location]
    assert [ids[i] for i in where] == expected[0] + expected[1]
    # each region's four tokens in a row, after "Describe", between the two text pieces
    first, second = where[:4], where[4:]
    assert first == list(range(first[0], first[0] + 4)) and second == list(range(second[0], second[0] + 4))
    def text(part):  # (image-token positions hold -1)
        return decoder.tokenizer.decode([t for t in part if t >= 0])
    assert text(ids[:first[0]]).rstrip().endswith("Describe")
    assert text(ids[first[-1] + 1:second[0]]).strip() == "next to"
    assert text(ids[second[-1] + 1:]).lstrip().startswith("please.")
    assert "region" not in text(ids)
    # the read-out vector is added to the embeddings of its region's tokens
    table = decoder.embed_tokens(torch.tensor(expected[0] + expected[1]))
    added = torch.cat([vectors[0].expand(4, -1), vectors[1].expand(4, -1)])
    assert torch.allclose(batch.embeds[0, where], table + added, atol=1e-6)

    # without a read-out the same positions hold the tokens alone
    del sample.region_embeds
    plain = decoder._assemble([decoder._prompt_segments(instruction, image, regions=decoder._region_prompt(sample))])
    assert plain.input_ids.tolist() == batch.input_ids.tolist()
    assert torch.allclose(plain.embeds[0, where], table, atol=1e-6)


def test_region_text_loss_and_generation_read_the_regions(decoder):
    instruction = "<image> What colour is <region>?"
    image = torch.randn(1, 6, decoder.hidden_size, generator=torch.Generator().manual_seed(1))
    near, far = region_sample(instruction, [[0.0, 0.0, 20.0, 20.0]]), region_sample(instruction, [[60.0, 30.0, 99.0, 59.0]])
    with torch.no_grad():
        assert decoder._text_loss(image, [near]) != decoder._text_loss(image, [far])
        for sample in (near, far):
            assert isinstance(decoder.predict(image, torch.rand(1, 6, 2), [sample])[0].pred_text, str)


def test_placeholder_and_region_counts_must_agree_in_the_model(decoder):
    from visionllm.instructions import RegionError
    image = torch.randn(6, decoder.hidden_size)
    with pytest.raises(RegionError, match="1 <region> placeholder"):
        decoder._region_prompt(region_sample("<image> Describe <region>.", None))
    with pytest.raises(RegionError, match="0 <region> placeholder"):
        decoder._region_prompt(region_sample("<image> Describe the image.", [[0, 0, 5, 5]]))
    with pytest.raises(ValueError, match="came with it"):
        decoder._prompt_segments("<image> Describe <region>.", image, regions=None)


def test_prompts_without_regions_are_cut_as_before(decoder):
    text = "<image> Write a short caption for the image."
    before, after = decoder.prompt.encode(text)
    assert decoder.prompt.encode_pieces(text) == [before, "<image>", after]
    segments = decoder._prompt_segments(text, torch.zeros(6, decoder.hidden_size))
    assert [s for s, _ in segments][0] == before and [s for s, _ in segments][2] == after


def test_structured_instructions_carry_regions_too(decoder):
    from tiny_llm import make_sample
    from visionllm.instructions import format_category_set
    instruction = ("Detect every object of the categories " + format_category_set(["cat", "dog"])
                   + " that looks like <region> in <image>. Answer as a list of (c, x1, y1, x2, y2).")
    sample = make_sample("detection", instruction, categories=["cat", "dog"], output_format=("cls", "x1", "y1", "x2", "y2"),
                         bboxes=[[5.0, 5.0, 30.0, 40.0]], labels=[1], img_shape=(60, 100))
    sample.set_metainfo(dict(regions=[[5.0, 5.0, 30.0, 40.0]]))
    image, refs = torch.randn(1, 6, decoder.hidden_size), torch.rand(1, 6, 2)
    prefix = decoder._structured_prefix(image, [instruction], ("cls", "x1", "y1", "x2", "y2"),
                                        [decoder._prompt_context(sample)])
    assert sum(int(t) in set(decoder.location_ids.tolist()) for t in prefix.input_ids[0]) == 4
    with torch.no_grad():
        losses = decoder.loss(image, refs, [sample])
        assert all(torch.isfinite(v) for v in losses.values())
        assert "pred_instances" in decoder.predict(image, refs, [sample])[0]
