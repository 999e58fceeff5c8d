"""Pixels at each token's reference point (visionllm/models/image_tokenizer/point_appearance.py)."""
import math

import torch

from visionllm.models.image_tokenizer.point_appearance import PointAppearanceEmbedding


def fresh_generator():
    return torch.Generator().manual_seed(torch.seed() % 2**31)


def reference_samples(image, valid_hw, points, offsets):
    """Bilinear interpolation written out per sample: pixel centres at integer + 0.5, zero
    outside the tensor. ``image [C, H, W]``, ``points [M, 2]`` in [0, 1] of the valid area."""
    channels, height, width = image.shape
    valid_h, valid_w = valid_hw
    out = torch.zeros(len(points), len(offsets), channels, dtype=image.dtype)

    def pixel(y, x):
        if 0 <= y < height and 0 <= x < width:
            return image[:, y, x]
        return torch.zeros(channels, dtype=image.dtype)

    for m, point in enumerate(points):
        for s, offset in enumerate(offsets):
            x = float(point[0] + offset[0]) * valid_w - 0.5
            y = float(point[1] + offset[1]) * valid_h - 0.5
            x0, y0 = math.floor(x), math.floor(y)
            fx, fy = x - x0, y - y0
            out[m, s] = ((1 - fy) * ((1 - fx) * pixel(y0, x0) + fx * pixel(y0, x0 + 1))
                         + fy * ((1 - fx) * pixel(y0 + 1, x0) + fx * pixel(y0 + 1, x0 + 1)))
    return out


def test_samples_match_bilinear_reference_on_padded_batches():
    g = fresh_generator()
    embed = PointAppearanceEmbedding(8, grid=3, radius=0.05)
    images = torch.randn(2, 3, 20, 24, generator=g, dtype=torch.float64)
    masks = torch.zeros(2, 20, 24, dtype=torch.bool)
    masks[1, 14:, :] = True  # second image: 14 x 17 valid, padded to the batch size
    masks[1, :, 17:] = True
    points = torch.rand(2, 5, 2, generator=g, dtype=torch.float64)
    ours = embed.sample(images, masks, points)
    for b, valid in enumerate([(20, 24), (14, 17)]):
        expected = reference_samples(images[b], valid, points[b], embed.offsets.double())
        torch.testing.assert_close(ours[b], expected, rtol=1e-10, atol=1e-12)


def test_gradient_reaches_the_pixels_and_the_map():
    g = fresh_generator()
    embed = PointAppearanceEmbedding(4, grid=2, radius=0.1).double()
    with torch.no_grad():
        embed.proj.weight.normal_(generator=g)
    images = torch.randn(1, 3, 9, 11, generator=g, dtype=torch.float64, requires_grad=True)
    masks = torch.zeros(1, 9, 11, dtype=torch.bool)
    points = torch.rand(1, 3, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1
    assert torch.autograd.gradcheck(lambda img: embed(img, masks, points), (images,))
    embed(images, masks, points).sum().backward()
    assert embed.proj.weight.grad.abs().sum() > 0


def test_starts_at_zero_and_separates_colours_once_trained():
    embed = PointAppearanceEmbedding(6)
    embed.init_weights()
    image = torch.zeros(1, 3, 40, 40)
    image[0, 0, :, :20] = 1.0  # red left half
    image[0, 2, :, 20:] = 1.0  # blue right half
    masks = torch.zeros(1, 40, 40, dtype=torch.bool)
    points = torch.tensor([[[0.25, 0.5], [0.75, 0.5], [0.2, 0.3]]])
    assert torch.count_nonzero(embed(image, masks, points)) == 0
    pixels = embed.sample(image, masks, points)
    torch.testing.assert_close(pixels[0, 0], torch.tensor([1.0, 0.0, 0.0]).expand(9, 3))
    torch.testing.assert_close(pixels[0, 1], torch.tensor([0.0, 0.0, 1.0]).expand(9, 3))
    with torch.no_grad():
        embed.proj.weight.normal_()
    out = embed(image, masks, points)[0]
    assert not torch.allclose(out[0], out[1]) and torch.allclose(out[0], out[2])
