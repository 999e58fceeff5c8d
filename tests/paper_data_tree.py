"""A miniature copy of the paper's data, in the exact formats and layout of the official releases
that configs/_base_/datasets/coco_refcoco_caption_llava.py reads (see docs/datasets.md):

    data/coco/{train2017,val2017,train2014,val2014}/        JPEG images (one grayscale)
    data/coco/annotations/instances_{train,val}2017.json    COCO 2017 instances: 80 categories with
                                                            the official non-contiguous ids,
                                                            polygons (one multi-part) and crowd
                                                            annotations as uncompressed RLE
    data/coco/annotations/dataset_coco.json                 Karpathy split (train/restval/val/test)
    data/refcoco/instances.json, data/refcoco/refs(unc).p   RefCOCO (unc); refs is a Python 2 pickle
    data/vqa/v2_OpenEnded_mscoco_{train,val}2014_questions.json, v2_mscoco_{train,val}2014_annotations.json
    data/llava/llava_instruct_150k.json

Image ids are shared between the 2014 and 2017 splits (as in COCO: the same pictures, split
differently), so the caption / VQA readers find their boxes in the 2017 instance files.
``expected_counts`` gives the number of samples each reader must yield from the tree.
"""
import io
import json
import os
import pickle
import struct
from typing import Dict

import cv2
import numpy as np

# The 80 COCO categories with their official ids (1..90 with gaps) and supercategories.
COCO_CATEGORIES = [
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"), (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"), (6, "bus", "vehicle"), (7, "train", "vehicle"), (8, "truck", "vehicle"),
    (9, "boat", "vehicle"), (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"), (14, "parking meter", "outdoor"), (15, "bench", "outdoor"),
    (16, "bird", "animal"), (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"),
    (20, "sheep", "animal"), (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"),
    (24, "zebra", "animal"), (25, "giraffe", "animal"), (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"), (31, "handbag", "accessory"), (32, "tie", "accessory"),
    (33, "suitcase", "accessory"), (34, "frisbee", "sports"), (35, "skis", "sports"),
    (36, "snowboard", "sports"), (37, "sports ball", "sports"), (38, "kite", "sports"),
    (39, "baseball bat", "sports"), (40, "baseball glove", "sports"), (41, "skateboard", "sports"),
    (42, "surfboard", "sports"), (43, "tennis racket", "sports"), (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"), (47, "cup", "kitchen"), (48, "fork", "kitchen"), (49, "knife", "kitchen"),
    (50, "spoon", "kitchen"), (51, "bowl", "kitchen"), (52, "banana", "food"), (53, "apple", "food"),
    (54, "sandwich", "food"), (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"),
    (58, "hot dog", "food"), (59, "pizza", "food"), (60, "donut", "food"), (61, "cake", "food"),
    (62, "chair", "furniture"), (63, "couch", "furniture"), (64, "potted plant", "furniture"),
    (65, "bed", "furniture"), (67, "dining table", "furniture"), (70, "toilet", "furniture"),
    (72, "tv", "electronic"), (73, "laptop", "electronic"), (74, "mouse", "electronic"),
    (75, "remote", "electronic"), (76, "keyboard", "electronic"), (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"), (79, "oven", "appliance"), (80, "toaster", "appliance"),
    (81, "sink", "appliance"), (82, "refrigerator", "appliance"), (84, "book", "indoor"),
    (85, "clock", "indoor"), (86, "vase", "indoor"), (87, "scissors", "indoor"), (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"), (90, "toothbrush", "indoor"),
]

# id -> (width, height, grayscale); which splits hold each picture.
IMAGES = {9: (160, 120, False), 25: (128, 160, True), 30: (144, 108, False), 34: (120, 90, False),
          139: (160, 106, False), 285: (112, 150, False)}
SPLITS_2017 = {"train2017": [9, 25, 30, 34], "val2017": [139, 285]}
SPLITS_2014 = {"train2014": [9, 25, 30], "val2014": [34, 139, 285]}
KARPATHY = {9: "train", 25: "train", 34: "restval", 30: "val", 139: "test", 285: "test"}


def file_name_2017(image_id: int) -> str:
    return f"{image_id:012d}.jpg"


def file_name_2014(split: str, image_id: int) -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def _polygon(rng, cx, cy, r, n):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.6, 1.0, n) * r
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).round(2)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (as crowd annotations store it): column-major runs, zeros first."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _instances(rng, image_id: int, next_id: list) -> list:
    """2-3 objects per picture: polygons (the first of image 9 has two parts) and, on images 9
    and 139, a crowd region as RLE. A polygon of image 30 reaches past the right border (COCO has
    such boxes; they are clipped, not dropped)."""
    w, h, _ = IMAGES[image_id]
    anns = []
    cats = [c[0] for c in COCO_CATEGORIES]
    for k in range(2 + image_id % 2):
        r = rng.uniform(0.12, 0.22) * min(w, h)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        parts = [_polygon(rng, cx, cy, r, 7 + k)]
        if image_id == 9 and k == 0:
            parts.append(_polygon(rng, min(w - 6, cx + 1.6 * r), cy, 0.4 * r, 5))
        if image_id == 30 and k == 1:
            parts[0][:, 0] += w - parts[0][:, 0].max() + 3  # 3 px past the right border
        points = np.concatenate(parts)
        x1, y1 = points.min(0)
        x2, y2 = points.max(0)
        anns.append(dict(segmentation=[p.flatten().tolist() for p in parts], area=float((x2 - x1) * (y2 - y1) * 0.7),
                         iscrowd=0, image_id=image_id, bbox=[float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                         category_id=int(cats[(image_id * 7 + k * 13) % len(cats)]), id=next_id[0]))
        next_id[0] += 1
    if image_id in (9, 139):
        mask = np.zeros((h, w), np.uint8)
        mask[h // 2:h // 2 + h // 5, w // 8:w // 8 + w // 3] = 1
        ys, xs = np.nonzero(mask)
        anns.append(dict(segmentation=_uncompressed_rle(mask), area=float(mask.sum()), iscrowd=1, image_id=image_id,
                         bbox=[float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                               float(ys.max() - ys.min() + 1)], category_id=1, id=next_id[0]))
        next_id[0] += 1
    return anns


def _draw(rng, image_id: int, anns: list) -> np.ndarray:
    w, h, gray = IMAGES[image_id]
    img = np.full((h, w, 3), rng.integers(40, 200, 3), np.uint8)
    for ann in anns:
        colour = [int(c) for c in rng.integers(0, 255, 3)]
        if ann["iscrowd"]:
            x, y, bw, bh = (int(v) for v in ann["bbox"])
            cv2.rectangle(img, (x, y), (x + bw - 1, y + bh - 1), colour, -1)
        else:
            for flat in ann["segmentation"]:
                cv2.fillPoly(img, [np.asarray(flat).reshape(-1, 2).round().astype(np.int32)], colour)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if gray else img


def _py2_pickle(obj) -> bytes:
    """Pickle ``obj`` the way Python 2 wrote ``refs(unc).p``: ``str`` values as byte strings
    (BINSTRING opcodes, UTF-8 bytes), which Python 3 only reads with ``encoding='latin1'``."""
    class Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us replace str saving
        dispatch = dict(pickle._Pickler.dispatch)

        def save_py2_str(self, text):
            data = text.encode("utf-8")
            if len(data) < 256:
                self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
            else:
                self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
            self.memoize(text)

        dispatch[str] = save_py2_str

    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _dump(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(obj, handle)


def write_paper_data_tree(root: str, seed: int = 0) -> Dict[str, object]:
    """Write the tree under ``root`` (which then holds ``data/``). Returns the annotations by
    image id (``anns``) for tests that want to check what the readers read."""
    rng = np.random.default_rng(seed)
    data = os.path.join(root, "data")
    coco = os.path.join(data, "coco")
    next_id = [1000]
    anns = {image_id: _instances(rng, image_id, next_id) for image_id in IMAGES}
    pictures = {image_id: _draw(rng, image_id, anns[image_id]) for image_id in IMAGES}
    categories = [dict(supercategory=s, id=i, name=n) for i, n, s in COCO_CATEGORIES]
    info = dict(description="COCO 2017 Dataset (test miniature)", version="1.0", year=2017)
    licenses = [dict(url="http://creativecommons.org/licenses/by/2.0/", id=4, name="Attribution License")]

    def image_record(image_id, file_name):
        w, h, _ = IMAGES[image_id]
        return dict(license=4, file_name=file_name, coco_url="", height=h, width=w,
                    date_captured="2013-11-14 11:18:45", flickr_url="", id=image_id)

    for split, ids in SPLITS_2017.items():
        os.makedirs(os.path.join(coco, split), exist_ok=True)
        for image_id in ids:
            cv2.imwrite(os.path.join(coco, split, file_name_2017(image_id)), pictures[image_id])
        _dump(os.path.join(coco, "annotations", f"instances_{split}.json"), dict(
            info=info, licenses=licenses, images=[image_record(i, file_name_2017(i)) for i in ids],
            annotations=[a for i in ids for a in anns[i]], categories=categories))
    for split, ids in SPLITS_2014.items():
        os.makedirs(os.path.join(coco, split), exist_ok=True)
        for image_id in ids:
            cv2.imwrite(os.path.join(coco, split, file_name_2014(split, image_id)), pictures[image_id])
    split_2014 = {i: s for s, ids in SPLITS_2014.items() for i in ids}

    # Karpathy split: 5 captions per image in the real file; 2-3 here, one with only tokens.
    karpathy, sent_id = [], 0
    for imgid, (image_id, split) in enumerate(sorted(KARPATHY.items())):
        sentences = []
        for k in range(2 + image_id % 2):
            raw = f"A picture number {image_id} with some shapes, take {k}."
            sentences.append(dict(tokens=raw.lower().strip(".").replace(",", "").split(), raw=raw, imgid=imgid,
                                  sentid=sent_id))
            sent_id += 1
        folder = split_2014[image_id]
        karpathy.append(dict(filepath=folder, sentids=[s["sentid"] for s in sentences],
                             filename=file_name_2014(folder, image_id), imgid=imgid, split=split,
                             sentences=sentences, cocoid=image_id))
    _dump(os.path.join(coco, "annotations", "dataset_coco.json"), dict(images=karpathy, dataset="coco"))

    # RefCOCO (unc): instances over the train2014 pictures + refs with train / val / testA splits.
    ref_images = SPLITS_2014["train2014"]
    refcoco = os.path.join(data, "refcoco")
    _dump(os.path.join(refcoco, "instances.json"), dict(
        info=info, licenses=licenses, images=[image_record(i, file_name_2014("train2014", i)) for i in ref_images],
        annotations=[a for i in ref_images for a in anns[i]], categories=categories))
    refs, sent_id = [], 0
    ref_split = {9: "train", 25: "train", 30: "val"}
    for ref_id, image_id in enumerate(ref_images):
        for ann in [a for a in anns[image_id] if not a["iscrowd"]][:2]:
            texts = ["left thing", "the café sign on the right"] if (image_id, ann["id"]) == (30, anns[30][0]["id"]) \
                else [f"object {ann['id']}"]
            sentences = [dict(tokens=t.split(), raw=t, sent_id=sent_id + k, sent=t) for k, t in enumerate(texts)]
            refs.append(dict(sent_ids=[s["sent_id"] for s in sentences],
                             file_name=f"COCO_train2014_{image_id:012d}_{ann['id']}.jpg", ann_id=ann["id"],
                             ref_id=len(refs), image_id=image_id, split=ref_split[image_id], sentences=sentences,
                             category_id=ann["category_id"]))
            sent_id += len(texts)
    refs.append(dict(refs[0], ref_id=len(refs), split="testA"))  # another split, left out by split='val'
    with open(os.path.join(refcoco, "refs(unc).p"), "wb") as handle:
        handle.write(_py2_pickle(refs))

    # VQAv2: questions + annotations per split (10 answers each), images named COCO_<split>_<id>.jpg.
    vqa = os.path.join(data, "vqa")
    for split, ids in SPLITS_2014.items():
        questions, answers = [], []
        for image_id in ids:
            for k in range(1 if split == "val2014" and image_id == 285 else 2):
                question_id = image_id * 1000 + k
                kind = ("how many", "number") if k else ("what color is the", "other")
                questions.append(dict(image_id=image_id, question=f"{kind[0]} object {k}?", question_id=question_id))
                words = [str(2 + k), str(2 + k), "3"] if k else ["red", "red", "dark red"]
                human = [dict(answer=words[j % 3], answer_confidence="yes", answer_id=j + 1) for j in range(10)]
                answers.append(dict(question_type=kind[0], multiple_choice_answer=words[0], answers=human,
                                    image_id=image_id, answer_type=kind[1], question_id=question_id))
        common = dict(info=info, license=licenses[0], data_subtype=split, data_type="mscoco")
        _dump(os.path.join(vqa, f"v2_OpenEnded_mscoco_{split}_questions.json"),
              dict(common, task_type="Open-Ended", questions=questions))
        _dump(os.path.join(vqa, f"v2_mscoco_{split}_annotations.json"), dict(common, annotations=answers))

    # LLaVA-Instruct-150K: ids are zero-padded strings; <image> before or after the first question.
    llava = [
        dict(id=file_name_2017(9)[:-4], image=file_name_2017(9), conversations=[
            dict(value="<image>\nWhat is in the image?", **{"from": "human"}),
            dict(value="Some coloured shapes on a plain background.", **{"from": "gpt"}),
            dict(value="Which one is on the left?", **{"from": "human"}),
            dict(value="The left one is the larger shape.", **{"from": "gpt"})]),
        dict(id=file_name_2017(25)[:-4], image=file_name_2017(25), conversations=[
            dict(value="Describe the picture in detail.\n<image>", **{"from": "human"}),
            dict(value="A grey picture with a few objects.", **{"from": "gpt"})]),
    ]
    _dump(os.path.join(data, "llava", "llava_instruct_150k.json"), llava)
    return dict(anns=anns)


def expected_counts() -> Dict[str, int]:
    """Samples each reader yields from the tree (by construction above)."""
    def objects(ids):
        return sum(2 + i % 2 for i in ids)
    return dict(
        coco_train_images=len(SPLITS_2017["train2017"]), coco_val_images=len(SPLITS_2017["val2017"]),
        coco_val_objects=objects(SPLITS_2017["val2017"]),
        refcoco_train=4, refcoco_val=3,   # refs of 9 and 25: one sentence each; image 30: 2 + 1 sentences
        caption_train=3, caption_test=2,  # train + restval; test
        vqa_train=2 * len(SPLITS_2014["train2014"]), vqa_val=5,
        llava=3,                          # 2 turns + 1 turn
    )
