"""Dense shape-kind pretraining of a ResNet body on a shapes train split.

Why: the embedded default has no ImageNet weights (nothing is downloaded), and a random-init
ResNet trained through the whole VisionLLM loss sees ~3.5 objects per step, too few to learn
which shape is which. Here every pixel is a label: a light FPN head on the strides 8/16/32
features predicts the shape kind (or background) per pixel, with batches of whole images. The
saved file holds only the ResNet body (timm key names), the form
``ResNetBackbone.load_checkpoint`` reads. Shared by tools/pretrain_backbone_shapes.py and
:class:`~visionllm.engine.backbone_pretraining_hook.ShapeKindPretrainingHook`.
"""
import io
import json
import os
import time
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from visionllm.datasets.shape_kind_maps import IGNORE, load_kind_maps, normalise, random_kind_batch
from visionllm.models.image_tokenizer.backbones.resnet import ResNetBackbone

from .checkpoint import AtomicLocalBackend

BODY_FILE = "resnet_body.pth"
HISTORY_FILE = "history.json"


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


def save_atomically(state: dict, path: str) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    AtomicLocalBackend().put(buffer.getvalue(), path)


def pretrain_shape_kind_body(data_root: str, out_dir: str, depth: int = 18, iters: int = 1500,
                             batch_size: int = 16, lr: float = 1e-3, size: int = 192, eval_interval: int = 500,
                             max_images: Optional[int] = None, seed: int = 0,
                             log: Callable[[str], None] = tqdm.write, log_interval: int = 0,
                             progress: bool = True) -> List[dict]:
    """Train a fresh ``resnet{depth}`` body (seeded by ``seed``) on the train split's kind maps
    and write ``out_dir/resnet_body.pth`` (its state dict) and ``out_dir/history.json`` once,
    at the end, so an existing body file is always a finished one.

    Every ``eval_interval`` iterations and at the end it logs the per-object kind accuracy on
    the val split (mean class probability over each object's pixels); every ``log_interval``
    iterations (0: never) the running loss. Uses the global torch RNG (seeded here). Returns
    the evaluation history (iteration, running loss, accuracy, minutes).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_images, train_labels, _, num_classes = load_kind_maps(data_root, "train", size, max_images)
    val_images, _, val_objects, _ = load_kind_maps(data_root, "val", size, max_images)

    backbone = ResNetBackbone(depth=depth, embed_dims=128)
    body = backbone.body
    head = DenseKindHead(backbone.in_channels, num_classes)
    params = list(body.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warmup = max(iters // 20, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: min((it + 1) / warmup, 0.5 * (1 + np.cos(np.pi * it / iters))))
    # Background is most of every image; down-weight it so the kinds drive the features.
    class_weights = torch.ones(num_classes)
    class_weights[0] = 0.2

    history = []
    start = time.time()
    bar = tqdm(range(1, iters + 1), desc="pretrain backbone", disable=not progress)
    running = None
    for it in bar:
        body.train()
        head.train()
        x, y = random_kind_batch(rng, train_images, train_labels, batch_size)
        logits = F.interpolate(head(body(x)), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, weight=class_weights, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
        if log_interval and it % log_interval == 0:
            log(f"backbone pretraining iter {it}/{iters}: loss {running:.3f}, "
                f"{(time.time() - start) / it:.2f} s/iter")
        if it % eval_interval == 0 or it == iters:
            body.eval()
            head.eval()
            accuracy = object_accuracy(predict(body, head, val_images), val_objects)
            history.append(dict(iter=it, loss=running, val_object_kind_accuracy=accuracy,
                                minutes=(time.time() - start) / 60))
            log(f"backbone pretraining iter {it}: loss {running:.3f}, val object kind accuracy "
                f"{100 * accuracy:.1f} % (chance {100 / (num_classes - 1):.1f} %)")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, HISTORY_FILE), "w") as f:
        json.dump(dict(data_root=data_root, depth=depth, iters=iters, batch_size=batch_size, lr=lr, size=size,
                       max_images=max_images, seed=seed, history=history), f, indent=1)
    # The body last: its presence marks a finished stage (the hook skips the stage when it exists).
    save_atomically(body.state_dict(), os.path.join(out_dir, BODY_FILE))
    return history
