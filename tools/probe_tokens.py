"""What do the image tokens know? Linear probes of object attributes on the tokens.

    python tools/probe_tokens.py CONFIG CHECKPOINT [--data data/shapes] [--train-images 400]
        [--val-images 200] [--task caption] [--seed 0] [--cfg-options key=value ...]

Every ground-truth object of an image is matched (Hungarian, centre distance) to one of the image
tokens the model produces for a caption / VQA instruction; a linear classifier is trained on the
tokens of the train images to predict the object's category and each attribute found in the COCO
annotations (``attributes`` dict, e.g. the shapes data's colour and size), and is scored on the
val images. The tokens are read both as the tokenizer produces them and after the projection into
the LLM. High probe accuracy with low task accuracy means the decoder does not read what is there;
low probe accuracy means the tokens do not carry it.
"""
import argparse
import json
import os.path as osp
import random
from typing import Dict, List

import numpy as np
import torch
from mmengine.config import Config, DictAction

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=osp.join(REPO, "data", "shapes"))
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--task", choices=("caption", "vqa"), default="caption")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config keys, e.g. model.image_tokenizer.token_appearance=None")
    return parser.parse_args(argv)


def collect(inferencer, data_root: str, split: str, num_images: int, instruction: str):
    """Per matched object: token features and the object's labels ``{'category': id, attr: value}``."""
    from PIL import Image
    from scipy.optimize import linear_sum_assignment
    with open(osp.join(data_root, "annotations", f"instances_{split}.json")) as handle:
        coco = json.load(handle)
    by_image: Dict[int, list] = {}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd"):
            by_image.setdefault(ann["image_id"], []).append(ann)
    feats: Dict[str, List[np.ndarray]] = {"embeds": [], "llm_embeds": []}
    labels: List[Dict[str, str]] = []
    for info in coco["images"][:num_images]:
        objects = by_image.get(info["id"], [])
        if not objects:
            continue
        image = np.asarray(Image.open(osp.join(data_root, "images", split, info["file_name"])).convert("RGB"))
        tokens = inferencer.image_tokens(image, instruction)
        centres = np.array([[(a["bbox"][0] + a["bbox"][2] / 2) / info["width"],
                             (a["bbox"][1] + a["bbox"][3] / 2) / info["height"]] for a in objects])
        refs = tokens["reference_points"].numpy()
        token_idx, object_idx = linear_sum_assignment(((refs[:, None] - centres[None]) ** 2).sum(-1))
        for t, o in zip(token_idx, object_idx):
            for key in feats:
                feats[key].append(tokens[key][t].float().numpy())
            labels.append(object_labels(objects[o]))
    return {k: np.stack(v) for k, v in feats.items()}, labels


def object_labels(annotation: dict) -> Dict[str, str]:
    """The classes a probe predicts for one COCO object: its category and every named attribute
    (string values such as colour and size; numbers and lists, e.g. an RGB value, are not classes)."""
    return dict(category=str(annotation["category_id"]),
                **{k: v for k, v in (annotation.get("attributes") or {}).items() if isinstance(v, str)})


def probe_accuracy(train_x, train_y, val_x, val_y, seed: int, steps: int = 500) -> float:
    """Held-out accuracy of a softmax-regression probe on standardised features."""
    classes = sorted(set(train_y))
    index = {c: i for i, c in enumerate(classes)}
    keep = [i for i, y in enumerate(val_y) if y in index]
    x_train, x_val = torch.tensor(train_x), torch.tensor(val_x[keep])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    y_train = torch.tensor([index[y] for y in train_y])
    y_val = torch.tensor([index[val_y[i]] for i in keep])
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x_train.shape[1], len(classes))
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(probe(x_train), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        return float((probe(x_val).argmax(-1) == y_val).float().mean())


def main(argv=None):
    args = parse_args(argv)
    from visionllm.apis.inferencer import VisionLLMInferencer
    from visionllm.tasks import build_instruction
    question = "what color is the square?" if args.task == "vqa" else None
    instruction = build_instruction(args.task, random.Random(args.seed), question=question, template_index=0).text
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    inferencer = VisionLLMInferencer(cfg, args.checkpoint)
    train_feats, train_labels = collect(inferencer, args.data, "train", args.train_images, instruction)
    val_feats, val_labels = collect(inferencer, args.data, "val", args.val_images, instruction)
    properties = [k for k in train_labels[0] if all(k in lab for lab in train_labels)]
    print(f"instruction: {instruction!r}; {len(train_labels)} train / {len(val_labels)} val objects")
    print("| tokens | " + " | ".join(f"{p} (chance)" for p in properties) + " |")
    print("|---|" + "---|" * len(properties))
    for key in ("embeds", "llm_embeds"):
        cells = []
        for prop in properties:
            train_y = [lab[prop] for lab in train_labels]
            val_y = np.array([lab.get(prop) for lab in val_labels], dtype=object)
            majority = max(set(train_y), key=train_y.count)
            acc = probe_accuracy(train_feats[key], train_y, val_feats[key], val_y, args.seed)
            cells.append(f"{100 * acc:.1f} % ({100 * np.mean(val_y == majority):.1f} %)")
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
