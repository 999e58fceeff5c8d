"""Batching of images of different sizes: normalise, pad to a common size, record the padding."""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor

from visionllm.registry import MODELS


@MODELS.register_module()
class VisionLLMDataPreprocessor(BaseDataPreprocessor):
    """Turns ``dict(inputs=[uint8 [3,H,W], ...], data_samples=[...])`` into model inputs.

    Output: ``dict(inputs=dict(images=[B,3,Hp,Wp] float, image_masks=[B,Hp,Wp] bool),
    data_samples=...)`` where ``image_masks`` is True on padding. ``Hp, Wp`` are the largest
    height / width of the batch rounded up to ``pad_size_divisor`` so every backbone stride
    divides the padded map.
    """

    def __init__(self, mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375), pad_size_divisor: int = 64):
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std must have 3 values (RGB)")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.pad_size_divisor = pad_size_divisor

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        images: List[torch.Tensor] = list(data["inputs"])
        data_samples = data.get("data_samples")
        if not images:
            raise ValueError("empty batch: no images")
        for image in images:
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"expected RGB images shaped [3, H, W], got {tuple(image.shape)}")
        div = self.pad_size_divisor
        max_h = max(img.shape[1] for img in images)
        max_w = max(img.shape[2] for img in images)
        pad_h = -(-max_h // div) * div
        pad_w = -(-max_w // div) * div
        batch, masks = [], []
        for img in images:
            normed = (img.float() - self.mean) / self.std
            h, w = img.shape[1:]
            batch.append(F.pad(normed, (0, pad_w - w, 0, pad_h - h)))
            mask = torch.ones(pad_h, pad_w, dtype=torch.bool, device=img.device)
            mask[:h, :w] = False
            masks.append(mask)
        if data_samples is not None:
            for sample in data_samples:
                sample.set_metainfo(dict(batch_input_shape=(pad_h, pad_w)))
        return dict(inputs=dict(images=torch.stack(batch), image_masks=torch.stack(masks)),
                    data_samples=data_samples)
