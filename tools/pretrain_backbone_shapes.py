"""Pretrain the ResNet body of the tiny model on the shapes train split (dense shape-kind labels).

    python tools/pretrain_backbone_shapes.py --out work_dirs/backbone_shapes --iters 1500 --seed 0

Why: the embedded default has no ImageNet weights (nothing is downloaded), and a random-init
ResNet trained through the whole VisionLLM loss sees ~3.5 objects per step, too few to learn
which shape is which. Here every pixel is a label: a light FPN head on the strides 8/16/32 features
predicts the shape kind (or background) per pixel, with batches of whole images. The saved file
holds only the ResNet body (timm key names) and feeds the model config through
``model.image_tokenizer.backbone.checkpoint``. The held-out number printed is the per-object kind
accuracy on the val split (mean class probability over each object's pixels).
"""
import argparse
import io
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools.coco import COCO
from torch import nn
from tqdm import tqdm

from visionllm.engine.checkpoint import AtomicLocalBackend
from visionllm.models.image_tokenizer.backbones.resnet import ResNetBackbone

IGNORE = 255
# ImageNet statistics, as the model's data preprocessor uses.
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data/shapes")
    parser.add_argument("--out", default="work_dirs/backbone_shapes", help="output folder")
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", type=int, default=192, help="long side of the resized images (as in training)")
    parser.add_argument("--eval-interval", type=int, default=500)
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N images of each split")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_split(data_root: str, split: str, size: int, max_images=None):
    """Images resized (keep ratio, long side ``size``) and padded to ``size``², with label maps.

    Returns ``images`` uint8 [N, size, size, 3], ``labels`` uint8 [N, size, size] (0 background,
    k = category id, IGNORE on padding) and, per image, the list of (category id, bool mask).
    """
    ann_file = os.path.join(data_root, "annotations", f"instances_{split}.json")
    if not os.path.isfile(ann_file):
        raise SystemExit(f"error: {ann_file} not found; write the data with tools/make_shapes.py first")
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


class DenseKindHead(nn.Module):
    """FPN-style sum of the projected levels at stride 8, then a per-pixel classifier."""

    def __init__(self, in_channels, num_classes: int, width: int = 128):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, features):
        size = features[0].shape[-2:]
        fused = sum(F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False) if i else lat(f)
                    for i, (lat, f) in enumerate(zip(self.lateral, features)))
        return self.classifier(self.fuse(fused))


def normalise(images_uint8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float()
    return (x - MEAN) / STD


def predict(body, head, images: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """Per-pixel class probabilities at input resolution, float32 [N, C, H, W]."""
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = normalise(images[start:start + batch_size])
            logits = head(body(x))
            outputs.append(F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False).softmax(1))
    return torch.cat(outputs)


def object_accuracy(probabilities: torch.Tensor, objects) -> float:
    """Share of objects whose mean kind probability over their pixels peaks at the right kind."""
    correct = total = 0
    for probs, image_objects in zip(probabilities, objects):
        for category, mask in image_objects:
            kind_probs = probs[1:, torch.from_numpy(mask)].mean(1)
            correct += int(kind_probs.argmax().item() + 1 == category)
            total += 1
    return correct / max(total, 1)


def random_batch(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, batch_size: int):
    """Random images with horizontal flips and a random 90°-multiple rotation; the shape kinds
    are invariant to both, so the labels follow the pixels."""
    index = rng.integers(len(images), size=batch_size)
    x, y = images[index].copy(), labels[index].copy()
    for i in range(batch_size):
        if rng.random() < 0.5:
            x[i], y[i] = x[i, :, ::-1], y[i, :, ::-1]
        k = int(rng.integers(4))
        x[i], y[i] = np.rot90(x[i], k), np.rot90(y[i], k)
    return normalise(x), torch.from_numpy(y).long()


def save_atomically(state: dict, path: str) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    AtomicLocalBackend().put(buffer.getvalue(), path)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    train_images, train_labels, _, num_classes = load_split(args.data_root, "train", args.size, args.max_images)
    val_images, _, val_objects, _ = load_split(args.data_root, "val", args.size, args.max_images)

    backbone = ResNetBackbone(depth=args.depth, embed_dims=128)
    body = backbone.body
    head = DenseKindHead(backbone.in_channels, num_classes)
    params = list(body.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    warmup = max(args.iters // 20, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: min((it + 1) / warmup, 0.5 * (1 + np.cos(np.pi * it / args.iters))))
    # Background is most of every image; down-weight it so the kinds drive the features.
    class_weights = torch.ones(num_classes)
    class_weights[0] = 0.2

    history = []
    start = time.time()
    progress = tqdm(range(1, args.iters + 1), desc="pretrain backbone")
    running = None
    for it in progress:
        body.train()
        head.train()
        x, y = random_batch(rng, train_images, train_labels, args.batch_size)
        logits = F.interpolate(head(body(x)), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, weight=class_weights, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        progress.set_postfix(loss=f"{running:.3f}")
        if it % args.eval_interval == 0 or it == args.iters:
            body.eval()
            head.eval()
            accuracy = object_accuracy(predict(body, head, val_images), val_objects)
            history.append(dict(iter=it, loss=running, val_object_kind_accuracy=accuracy,
                                minutes=(time.time() - start) / 60))
            tqdm.write(f"iter {it}: loss {running:.3f}, val object kind accuracy {100 * accuracy:.1f} %")
            save_atomically(body.state_dict(), os.path.join(args.out, "resnet_body.pth"))
    with open(os.path.join(args.out, "history.json"), "w") as f:
        json.dump(dict(args=vars(args), history=history), f, indent=1)
    print(f"saved {os.path.join(args.out, 'resnet_body.pth')}; final val object kind accuracy "
          f"{100 * history[-1]['val_object_kind_accuracy']:.1f} % (chance {100 / (num_classes - 1):.1f} %)")


if __name__ == "__main__":
    main()
