"""Per-pixel shape-kind label maps of a shapes split (tools/make_shapes.py), for dense pretraining.

Every image is resized (keep ratio, long side ``size``) and padded to ``size``²; its label map
holds 0 for background, the category id under each object and ``IGNORE`` on the padding.
"""
import os
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from tqdm import tqdm

IGNORE = 255
# ImageNet statistics, as the model's data preprocessor uses.
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def load_kind_maps(data_root: str, split: str, size: int, max_images: Optional[int] = None
                   ) -> Tuple[np.ndarray, np.ndarray, List[list], int]:
    """Images and label maps of ``split`` under ``data_root``.

    Returns ``images`` uint8 [N, size, size, 3], ``labels`` uint8 [N, size, size], per image the
    list of (category id, bool mask at ``size``²) of its objects, and the number of classes
    (largest category id + 1, background included). Raises FileNotFoundError when the split's
    instances file is missing.
    """
    ann_file = os.path.join(data_root, "annotations", f"instances_{split}.json")
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"{ann_file} not found; write the data with tools/make_shapes.py first")
    coco = COCO(ann_file)
    image_ids = sorted(coco.getImgIds())[:max_images]
    images = np.zeros((len(image_ids), size, size, 3), dtype=np.uint8)
    labels = np.full((len(image_ids), size, size), IGNORE, dtype=np.uint8)
    objects = []
    for i, image_id in enumerate(tqdm(image_ids, desc=f"loading {split}", leave=False)):
        info = coco.loadImgs(image_id)[0]
        path = os.path.join(data_root, "images", split, info["file_name"])
        scale = size / max(info["width"], info["height"])
        w, h = round(info["width"] * scale), round(info["height"] * scale)
        images[i, :h, :w] = np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR))
        label = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        image_objects = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            mask = coco.annToMask(ann).astype(bool)
            label[mask] = ann["category_id"]
            image_objects.append(ann["category_id"])
        labels[i, :h, :w] = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
        objects.append([(cat, labels[i] == cat) for cat in image_objects])
    num_classes = max(coco.getCatIds()) + 1
    return images, labels, objects, num_classes


def normalise(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float32 [N, 3, H, W] with the ImageNet mean and std."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float()
    return (x - MEAN) / STD


def random_kind_batch(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, batch_size: int
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random images with horizontal flips and a random 90°-multiple rotation; the shape kinds
    are invariant to both, so the labels follow the pixels. Returns normalised images and long
    label maps."""
    index = rng.integers(len(images), size=batch_size)
    x, y = images[index].copy(), labels[index].copy()
    for i in range(batch_size):
        if rng.random() < 0.5:
            x[i], y[i] = x[i, :, ::-1], y[i, :, ::-1]
        k = int(rng.integers(4))
        x[i], y[i] = np.rot90(x[i], k), np.rot90(y[i], k)
    return normalise(x), torch.from_numpy(y).long()
