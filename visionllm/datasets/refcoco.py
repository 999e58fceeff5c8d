"""RefCOCO / RefCOCO+ / RefCOCOg reader: refs (pickle or json list) + COCO instances json."""
import os
from typing import List, Optional, Sequence, Union

from mmengine.dataset import BaseDataset

from visionllm.registry import DATASETS

from .base import BadAnnotations, join_root, load_annotation, sentences_of, xywh_box_problem


@DATASETS.register_module()
class RefCocoDataset(BaseDataset):
    """Referring expressions for visual grounding, one sample per sentence.

    Args:
        ann_file: COCO instances json holding the referred boxes and the images.
        refs_file: ``refs(unc).p`` / ``refs(umd).p`` pickle of the official release, or a json
            list of ``{ref_id, image_id, ann_id, split, sentences}`` (what make_shapes writes).
        split: keep refs of this split (``'train'``, ``'val'``, ``'testA'``...); None keeps all.

    data_info: ``img_path, img_id, height, width, task='grounding', expression, ref_id, ann_id,
    instances=[{bbox (xyxy, original pixels), bbox_label=0, mask, ignore_flag=0}]``.
    """

    METAINFO = dict(classes=("object",), task="grounding")

    def __init__(self, *args, refs_file: str = "", split: Optional[Union[str, Sequence[str]]] = None,
                 check_image_files: bool = True, **kwargs):
        self.refs_file = join_root(kwargs.get("data_root"), refs_file)
        self.split = [split] if isinstance(split, str) else split
        self.check_image_files = check_image_files
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        coco = load_annotation(self.ann_file)
        refs = load_annotation(self.refs_file)
        images = {img["id"]: img for img in coco.get("images", [])}
        anns = {ann["id"]: ann for ann in coco.get("annotations", [])}
        bad = BadAnnotations(f"{type(self).__name__}({self.refs_file})")
        prefix = self.data_prefix.get("img_path", self.data_prefix.get("img", ""))
        exists = {}
        data_list = []
        for ref in refs:
            if self.split is not None and ref.get("split") not in self.split:
                continue
            sentences = sentences_of(ref)
            ann = anns.get(ref.get("ann_id"))
            img = images.get(ref.get("image_id"))
            if ann is None or img is None:
                bad.skip("ref without instance or image", max(1, len(sentences)), example=ref.get("ref_id"))
                continue
            path = os.path.join(prefix, img["file_name"])
            if self.check_image_files:
                if path not in exists:
                    exists[path] = os.path.isfile(path)
                if not exists[path]:
                    bad.skip("missing image file", max(1, len(sentences)), example=path)
                    continue
            problem, box = xywh_box_problem(ann.get("bbox"), img.get("width"), img.get("height"))
            if problem:
                bad.skip(problem, max(1, len(sentences)), example=ref.get("ref_id"))
                continue
            if not sentences:
                bad.skip("ref without sentences", example=ref.get("ref_id"))
                continue
            instance = dict(bbox=box, bbox_label=0, mask=ann.get("segmentation"), ignore_flag=0, ann_id=ann["id"])
            for sentence in sentences:
                data_list.append(dict(img_path=path, img_id=img["id"], height=img["height"], width=img["width"],
                                      task="grounding", expression=sentence, ref_id=ref.get("ref_id"),
                                      ann_id=ann["id"], instances=[dict(instance)]))
        bad.report()
        self.num_bad_annotations = bad.total
        self.bad_annotations = bad  # counts and examples by reason (tools/check_data.py)
        return data_list
