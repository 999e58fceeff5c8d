"""The one polygon rasteriser (visionllm.utils.polygon_masks) against an independent rule
(pixels whose centre lies inside the polygon, shapely), and the cases pycocotools gets wrong
when called naively."""
import numpy as np
import pytest
import shapely
from pycocotools import mask as mask_utils
from shapely.geometry import Polygon

from visionllm.utils.polygon_masks import polygon_mask, polygon_rle


def _centres_inside(points, height, width):
    ys, xs = np.mgrid[0:height, 0:width]
    return shapely.contains_xy(Polygon(np.asarray(points, np.float64).reshape(-1, 2)), xs + 0.5, ys + 0.5)


@pytest.mark.parametrize("seed", range(5))
def test_random_polygon_covers_the_pixels_whose_centres_it_contains(seed):
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
    radii = rng.uniform(8, 20, 9)
    points = np.stack([32 + radii * np.cos(angles), 30 + radii * np.sin(angles)], 1)
    mask = polygon_mask([points], 60, 64)
    expected = _centres_inside(points, 60, 64)
    assert mask.shape == (60, 64) and mask.dtype == bool
    # The two rules differ only on pixels the outline passes through.
    assert (mask != expected).sum() <= 0.03 * expected.sum()
    assert mask.sum() == pytest.approx(expected.sum(), rel=0.03)


def test_parts_are_united_and_flat_or_paired_points_agree():
    left = [2, 2, 12, 2, 12, 12, 2, 12]
    right = np.array([[20, 5], [30, 5], [30, 15], [20, 15]], np.float32)
    both = polygon_mask([left, right], 20, 32)
    assert np.array_equal(both, polygon_mask([left], 20, 32) | polygon_mask([right], 20, 32))
    assert np.array_equal(polygon_mask([right], 20, 32), polygon_mask([right.reshape(-1).tolist()], 20, 32))
    assert np.array_equal(mask_utils.decode(polygon_rle([left, right], 20, 32)).astype(bool), both)


def test_two_point_polygon_is_not_read_as_a_box():
    # pycocotools reads a 4-number list as a box [x, y, w, h] (100 pixels here); a 2-point
    # polygon has no area.
    assert polygon_mask([[0, 0, 10, 10]], 20, 20).sum() < 25


def test_no_parts_is_an_empty_mask_and_odd_numbers_an_error():
    assert not polygon_mask([], 5, 6).any() and polygon_mask([], 5, 6).shape == (5, 6)
    with pytest.raises(ValueError, match="points"):
        polygon_mask([[1, 2, 3]], 5, 6)
