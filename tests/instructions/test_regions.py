"""Regions in instructions: boxes through the location tokens and every kind of bad region."""
import re

import numpy as np
import pytest
import torch

from visionllm.instructions import LocationCodec, RegionError, check_regions
from visionllm.instructions.regions import region_bins, region_boxes, split_placeholders
from visionllm.models.llm.vocabulary import SpecialTokens

INSTRUCTION = "<image> Is <region> left of <region>?"


@pytest.mark.parametrize("num_bins", [65, 1025])
@pytest.mark.parametrize("image_wh", [(1280.0, 720.0), (97.0, 203.0)])
def test_a_box_round_trips_through_the_location_tokens(num_bins, image_wh):
    codec = LocationCodec(num_bins)
    names = SpecialTokens(num_bins=num_bins).location_tokens
    g = torch.Generator().manual_seed(0)
    w, h = image_wh
    corners = torch.rand(50, 2, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h], dtype=torch.float64)
    boxes = torch.cat([corners.min(1).values, corners.max(1).values], -1)
    boxes[0] = torch.tensor([0.0, 0.0, w, h], dtype=torch.float64)  # the whole image: the outermost bins
    bins = region_bins(codec, boxes, image_wh)
    # written as token names and read back from them
    tokens = [[names[b] for b in row] for row in bins.tolist()]
    read = torch.tensor([[names.index(t) for t in row] for row in tokens])
    assert all(re.fullmatch(r"<p\d+>", t) for row in tokens for t in row)  # from the corner: offsets >= 0
    decoded = region_boxes(codec, read, image_wh)
    bin_width = torch.tensor([w, h, w, h], dtype=torch.float64) / codec.half
    assert ((decoded - boxes).abs() <= bin_width / 2 + 1e-9).all()
    assert bins[0].tolist() == [codec.half, codec.half, 2 * codec.half, 2 * codec.half]


def test_placeholders_split_in_order():
    assert split_placeholders("a <image> b <region> c <region>") == ["a ", "<image>", " b ", "<region>", " c ",
                                                                      "<region>", ""]


def test_good_regions_come_back_as_an_array():
    boxes = check_regions(INSTRUCTION, [[0, 0, 10, 20], (5.5, 1, 300, 100)], (300, 100))
    assert boxes.dtype == np.float32 and boxes.tolist() == [[0, 0, 10, 20], [5.5, 1, 300, 100]]
    assert check_regions(INSTRUCTION, np.asarray([[0, 0, 10, 20], [1, 1, 2, 2]]), (300, 100)).shape == (2, 4)
    assert check_regions("<image> Describe the image.", None, (300, 100)).shape == (0, 4)


BAD = [
    ([[0, 0, 10, 10]], r"2 <region> placeholder\(s\) but 1 region\(s\)"),  # too few
    ([[0, 0, 10, 10]] * 3, r"2 <region> placeholder\(s\) but 3 region\(s\)"),  # too many
    (None, r"2 <region> placeholder\(s\) but 0 region\(s\)"),
    ([[0, 0, 10, 10], [-1, 0, 10, 10]], "region 2 .* lies outside the 300x100 image"),
    ([[0, 0, 10, 10], [0, 0, 10, 101]], "lies outside the 300x100 image"),  # y beyond the height of a wide image
    ([[0, 0, 10, 10], [290, 0, 301, 10]], "lies outside"),
    ([[5, 0, 5, 10], [0, 0, 10, 10]], "region 1 .* zero or negative area"),
    ([[0, 0, 10, 10], [0, 10, 10, 4]], "region 2 .* zero or negative area"),
    ([[0, 0, 10, 10], [0, 0, 10]], "region 2 is not four finite numbers"),
    ([[0, 0, 10, 10], [0, 0, 10, float("nan")]], "not four finite numbers"),
    ([[0, 0, 10, 10], ["a", 0, 10, 10]], "region 2 is not four numbers"),
    ([0, 0, 10, 10], "must be a list of boxes"),  # one box not wrapped in a list
    ("0,0,10,10", "must be a list of"),
]


@pytest.mark.parametrize("regions, message", BAD)
def test_bad_regions_are_one_line_errors(regions, message):
    with pytest.raises(RegionError, match=message) as error:
        check_regions(INSTRUCTION, regions, (300, 100))
    assert "\n" not in str(error.value)


def test_regions_without_placeholders_are_refused():
    with pytest.raises(RegionError, match="no <region> placeholder") as error:
        check_regions("<image> Write a short caption for the image.", [[0, 0, 10, 10]], (300, 100))
    assert "\n" not in str(error.value)
