"""COCO instances reader (boxes + polygons) for the detection and segmentation tasks."""
import os
from typing import List, Optional

from mmengine.dataset import BaseDataset

from visionllm.registry import DATASETS

from .base import BadAnnotations, load_annotation, polygon_problem, xywh_box_problem


@DATASETS.register_module()
class CocoInstancesDataset(BaseDataset):
    """COCO-format instances for ``task='detection'`` or ``'segmentation'``.

    Labels are indices into the categories sorted by id (``metainfo['classes']``), the order the
    COCO metric maps back to category ids. Crowd annotations are kept with ``ignore_flag=1`` (the
    pipeline leaves them out of the targets; COCOeval ignores matches to them). Unusable
    annotations — zero-area box, unknown category id, and for segmentation an empty or
    self-intersecting polygon — and images whose file is missing are skipped and counted in one
    warning.

    With ``name_attribute`` (for example ``"colour"``) each object's category becomes
    ``"<attribute value> <category name>"`` ("red square"), read from the annotation's
    ``attributes`` dict: the classes are every such name in the file, sorted, with ids 1..N, so
    detection instructions name attribute-qualified categories and the model must tell them apart
    by that attribute. Objects without the attribute are skipped and counted. Such ids are the
    reader's own, so the COCO metric needs a file with these categories to score them.

    data_info: ``img_path, img_id, height, width, task, instances=[{bbox (xyxy), bbox_label,
    mask (COCO polygons or RLE), ignore_flag}]``.
    """

    def __init__(self, *args, task: str = "detection", filter_empty_gt: bool = False,
                 check_image_files: bool = True, name_attribute: Optional[str] = None, **kwargs):
        if task not in ("detection", "segmentation"):
            raise ValueError(f"task must be 'detection' or 'segmentation', got {task!r}")
        self.task = task
        self.name_attribute = name_attribute
        self.filter_empty_gt = filter_empty_gt
        self.check_image_files = check_image_files
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        coco = load_annotation(self.ann_file)
        bad = BadAnnotations(f"{type(self).__name__}({self.ann_file})")
        if self.name_attribute is not None:
            coco = self._attribute_categories(coco, bad)
        categories = sorted(coco.get("categories", []), key=lambda c: c["id"])
        cat_to_label = {c["id"]: i for i, c in enumerate(categories)}
        self._metainfo.update(classes=tuple(c["name"] for c in categories), cat_ids=tuple(cat_to_label),
                              task=self.task)
        anns_by_image = {}
        for ann in coco.get("annotations", []):
            anns_by_image.setdefault(ann["image_id"], []).append(ann)
        prefix = self.data_prefix.get("img_path", self.data_prefix.get("img", ""))
        data_list = []
        for img in coco.get("images", []):
            path = os.path.join(prefix, img["file_name"])
            anns = anns_by_image.get(img["id"], [])
            if self.check_image_files and not os.path.isfile(path):
                bad.skip("missing image file", max(1, len(anns)), example=path)
                continue
            instances = []
            for ann in anns:
                instance = self._parse_instance(ann, img, cat_to_label, bad)
                if instance is not None:
                    instances.append(instance)
            if self.filter_empty_gt and not any(not i["ignore_flag"] for i in instances):
                continue
            data_list.append(dict(img_path=path, img_id=img["id"], height=img["height"], width=img["width"],
                                  task=self.task, instances=instances))
        bad.report()
        self.num_bad_annotations = bad.total
        self.bad_annotations = bad  # counts and examples by reason (tools/check_data.py)
        return data_list

    def get_data_info(self, idx: int) -> dict:
        # The class names travel with each sample: BuildInstruction draws category sets from them.
        info = super().get_data_info(idx)
        info["classes"] = self.metainfo["classes"]
        return info

    def _attribute_categories(self, coco: dict, bad: BadAnnotations) -> dict:
        """``coco`` with one category per (attribute value, category) pair that occurs in it.
        Annotations of an unknown category keep no id, so ``_parse_instance`` skips and counts them."""
        kind_of = {c["id"]: c["name"] for c in coco.get("categories", [])}
        named = []
        for ann in coco.get("annotations", []):
            value = (ann.get("attributes") or {}).get(self.name_attribute)
            if not isinstance(value, str) or not value.strip():
                bad.skip(f"no {self.name_attribute!r} attribute", example=ann.get("id"))
            else:
                kind = kind_of.get(ann.get("category_id"))
                named.append((ann, None if kind is None else f"{value.strip()} {kind}"))
        id_of = {name: i + 1 for i, name in enumerate(sorted({name for _, name in named if name}))}
        return dict(coco, categories=[dict(id=i, name=name) for name, i in id_of.items()],
                    annotations=[dict(ann, category_id=id_of.get(name)) for ann, name in named])

    def _parse_instance(self, ann: dict, img: dict, cat_to_label: dict, bad: BadAnnotations) -> Optional[dict]:
        if ann.get("category_id") not in cat_to_label:
            bad.skip("unknown category id", example=ann.get("id"))
            return None
        problem, box = xywh_box_problem(ann.get("bbox"), img.get("width"), img.get("height"))
        if problem:
            bad.skip(problem, example=ann.get("id"))
            return None
        crowd = bool(ann.get("iscrowd", 0))
        segmentation = ann.get("segmentation")
        if self.task == "segmentation" and not crowd:
            problem = polygon_problem(segmentation)
            if problem:
                bad.skip(problem, example=ann.get("id"))
                return None
        return dict(bbox=box, bbox_label=cat_to_label[ann["category_id"]], mask=segmentation,
                    ignore_flag=int(crowd), ann_id=ann.get("id"))
