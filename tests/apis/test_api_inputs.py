"""Image inputs of every common kind, and clear one-line errors for bad ones."""
import numpy as np
import pytest
from PIL import Image

from visionllm.apis.inputs import InputError, load_image, MAX_DECODE_SIDE, original_size


@pytest.mark.parametrize("read", [load_image, original_size])
def test_missing_and_corrupt_files(tmp_path, read):
    """The same one-line errors whether the image is decoded or only its size is read."""
    with pytest.raises(InputError, match="not found: .*nope.png"):
        read(tmp_path / "nope.png")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff this is not really a jpeg")
    with pytest.raises(InputError, match="cannot read image") as err:
        read(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("mode", ["L", "RGBA", "RGB", "P", "I;16"])
def test_modes_become_rgb_uint8(tmp_path, mode):
    rng = np.random.default_rng()
    rgb = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    if mode == "I;16":
        image = Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)
    elif mode != "RGB":
        image = image.convert(mode)
    path = tmp_path / "img.png"
    image.save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (17, 23, 3)
    if mode == "RGB":
        np.testing.assert_array_equal(out, rgb)
    if mode == "I;16":
        np.testing.assert_array_equal(out[:, :, 0], rgb[:, :, 0])
    if mode == "L":
        np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])


def test_arrays_and_pil():
    gray16 = np.full((5, 6), 65535, dtype=np.uint16)
    assert load_image(gray16).min() == 255
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent → white background
    assert load_image(rgba).min() == 255
    floats = np.full((3, 3, 3), 0.5)
    assert load_image(floats)[0, 0, 0] in (127, 128)
    pil = Image.new("RGB", (9, 4), (10, 20, 30))
    assert tuple(load_image(pil)[0, 0]) == (10, 20, 30)
    for read in (load_image, original_size):
        with pytest.raises(InputError, match="unsupported image type"):
            read(42)
        for array in (np.zeros((2, 2, 2, 2), dtype=np.uint8), np.zeros((2, 2, 2), dtype=np.uint8)):
            with pytest.raises(InputError, match="shape"):
                read(array)
        with pytest.raises(InputError, match="empty image array"):
            read(np.zeros((0, 3, 3), dtype=np.uint8))
    assert original_size(gray16) == (5, 6) and original_size(pil) == (4, 9)


def test_huge_image_is_reduced_while_decoding(tmp_path):
    side = 10000
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (side, side // 2), (200, 10, 10)).save(path, quality=50)
    out = load_image(path)
    assert max(out.shape[:2]) <= MAX_DECODE_SIDE
    assert abs(out.shape[1] / out.shape[0] - 2.0) < 0.05


def test_region_errors_reach_the_api_as_one_input_error_line():
    from visionllm.apis.inputs import parse_regions
    size = (100, 300)  # (height, width) of the image as given
    assert parse_regions("<image> What is <region>?", [[0, 0, 300, 100]], size).tolist() == [[0, 0, 300, 100]]
    for regions, message in (([[0, 0, 301, 10]], "outside the 300x100 image"), ([[0, 0, 0, 10]], "zero or negative"),
                             (None, "but 0 region"), ([[1, 2, 3]], "not four finite numbers")):
        with pytest.raises(InputError, match=message) as error:
            parse_regions("<image> What is <region>?", regions, size)
        assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="no <region> placeholder"):
        parse_regions("<image> Write a short caption for the image.", [[0, 0, 5, 5]], size)
