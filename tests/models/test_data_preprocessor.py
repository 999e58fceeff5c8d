"""Batching images of different sizes: normalisation, padding and the padding mask."""
import pytest
import torch
from mmdet.structures import DetDataSample

from visionllm.models.data_preprocessor import VisionLLMDataPreprocessor


def test_padding_mask_and_normalisation():
    pre = VisionLLMDataPreprocessor(mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0), pad_size_divisor=32)
    a = torch.randint(0, 256, (3, 40, 70), dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 65, 30), dtype=torch.uint8)
    samples = [DetDataSample(), DetDataSample()]
    out = pre(dict(inputs=[a, b], data_samples=samples))
    images, masks = out["inputs"]["images"], out["inputs"]["image_masks"]
    assert images.shape == (2, 3, 96, 96) and masks.shape == (2, 96, 96)
    expected_a = (a.float() - torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1)) / torch.tensor([2.0, 4.0, 5.0]).view(3, 1, 1)
    torch.testing.assert_close(images[0, :, :40, :70], expected_a)
    assert images[0, :, 40:].abs().sum() == 0 and images[0, :, :, 70:].abs().sum() == 0
    assert not masks[0, :40, :70].any() and masks[0, 40:].all() and masks[0, :, 70:].all()
    assert not masks[1, :65, :30].any() and masks[1, 65:].all() and masks[1, :, 30:].all()
    assert out["data_samples"][1].batch_input_shape == (96, 96)


def test_rejects_non_rgb():
    pre = VisionLLMDataPreprocessor()
    with pytest.raises(ValueError, match="RGB"):
        pre(dict(inputs=[torch.zeros(1, 8, 8, dtype=torch.uint8)], data_samples=[DetDataSample()]))
