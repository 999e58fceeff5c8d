"""Resize, flip and crop move a sample's ``regions`` with the image: after every transform each
region is still the box of the bright patch it was drawn on."""
import numpy as np
import pytest

from visionllm.datasets.transforms.augment import RandomCropWithText
from visionllm.datasets.transforms.formatting import PackVisionLLMInputs
from visionllm.datasets.transforms.geometric import RandomFlipWithText, ResizeKeepRatio

REGIONS = np.asarray([[20, 10, 60, 50], [100, 70, 180, 110]], np.float32)


def painted(h=120, w=200):
    """An image with a bright patch exactly under each region (region k in colour channel k)."""
    img = np.zeros((h, w, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(REGIONS.astype(int)):
        img[y1:y2, x1:x2, k] = 255
    return dict(img=img, img_shape=(h, w), ori_shape=(h, w), task="vqa", instruction="<image> Is <region> left of "
                "<region>?", question="is it?", regions=REGIONS.copy(), gt_bboxes=np.zeros((0, 4), np.float32),
                instances=[])


def patch_box(img, k):
    """Extent of the pixels of region k's patch (half-bright threshold, as resizing blurs edges)."""
    ys, xs = np.nonzero(img[:, :, k] >= 128)
    return np.asarray([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def assert_regions_on_patches(results, tolerance):
    assert np.asarray(results["regions"]).shape == (2, 4)
    for k in range(2):
        assert np.abs(results["regions"][k] - patch_box(results["img"], k)).max() <= tolerance


def test_resize_scales_regions_with_a_non_square_image():
    out = ResizeKeepRatio(scale=(333, 100))(painted())
    assert out["img_shape"] == (100, 167)
    assert_regions_on_patches(out, tolerance=1.5)


def test_flip_mirrors_regions():
    out = RandomFlipWithText(prob=1.0)(painted())
    assert out["flip"]
    assert_regions_on_patches(out, tolerance=0)
    assert out["regions"][0].tolist() == [140, 10, 180, 50]


@pytest.mark.parametrize("seed", range(5))
def test_crop_keeps_every_region_whole_and_moves_it(seed):
    np.random.seed(seed)
    out = RandomCropWithText(prob=1.0, min_scale=0.3)(painted())
    h, w = out["img"].shape[:2]
    assert (out["regions"][:, 2] <= w).all() and (out["regions"][:, 3] <= h).all()
    assert_regions_on_patches(out, tolerance=0)


def test_flip_crop_resize_then_pack_carry_the_regions():
    np.random.seed(0)
    results = painted()
    for step in (RandomFlipWithText(prob=1.0), RandomCropWithText(prob=1.0, min_scale=0.5), ResizeKeepRatio((96, 64))):
        results = step(results)
    assert_regions_on_patches(results, tolerance=1.5)
    sample = PackVisionLLMInputs()(results)["data_samples"]
    assert np.array_equal(sample.metainfo["regions"], results["regions"])
    assert PackVisionLLMInputs()(dict(img=np.zeros((4, 4, 3), np.uint8)))["data_samples"].metainfo["regions"] is None
