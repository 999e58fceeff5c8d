"""COCO Caption reader: Karpathy-split json or plain COCO captions json."""
import os
from typing import List, Optional, Sequence, Union

from mmengine.dataset import BaseDataset

from visionllm.registry import DATASETS

from .base import BadAnnotations, join_root, load_annotation, load_image_boxes


@DATASETS.register_module()
class CocoCaptionDataset(BaseDataset):
    """Image captioning, one sample per image with all its reference captions.

    Two formats are read:
    - Karpathy ``dataset_coco.json``: ``{"images": [{"filename", "filepath", "split",
      "sentences": [{"raw"}], "cocoid"}]}``; ``split`` selects images (``'train'`` also takes
      ``'restval'`` when ``include_restval``).
    - COCO captions: ``{"images": [{id, file_name}], "annotations": [{image_id, caption}]}``; an
      annotation may name its caption's ``style`` (``tools/make_shapes.py`` writes them), which
      the caption task ties to instructions asking for that style.

    Args:
        boxes_file: optional COCO instances json (or a list of them) of the same images (ids =
            ``img_id``); its boxes become the sample's ``instances`` (label -1) so the image
            tokenizer learns to put tokens on the objects a caption describes
            (``load_image_boxes``).
        read_styles: read the annotations' caption styles (default); False leaves them out, so
            the caption task asks for every caption with its plain phrasings, as for data
            without styles.

    data_info: ``img_path, img_id, task='caption', gt_texts (list[str])`` (+ height, width when
    known, + ``instances`` with ``boxes_file``, + ``gt_text_styles`` parallel to ``gt_texts`` when
    the annotations name styles).
    """

    METAINFO = dict(task="caption")

    def __init__(self, *args, split: Optional[Union[str, Sequence[str]]] = None, include_restval: bool = True,
                 check_image_files: bool = True, boxes_file: Union[str, Sequence[str]] = "",
                 read_styles: bool = True, **kwargs):
        splits = [split] if isinstance(split, str) else split
        if splits is not None and include_restval and "train" in splits:
            splits = list(splits) + ["restval"]
        self.split = splits
        self.check_image_files = check_image_files
        self.read_styles = read_styles
        self.boxes_file = join_root(kwargs.get("data_root"), boxes_file)
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        data = load_annotation(self.ann_file)
        bad = BadAnnotations(f"{type(self).__name__}({self.ann_file})")
        prefix = self.data_prefix.get("img_path", self.data_prefix.get("img", ""))
        images = data.get("images", [])
        if images and "sentences" in images[0]:
            entries = self._karpathy(images, prefix)
        else:
            entries = self._coco(data, prefix)
        boxes = load_image_boxes(self.boxes_file) if self.boxes_file else None
        data_list = []
        for entry in entries:
            if boxes is not None:
                entry["instances"] = boxes.get(entry["img_id"], [])
            if not entry["gt_texts"]:
                bad.skip("image without captions", example=entry["img_id"])
            elif self.check_image_files and not os.path.isfile(entry["img_path"]):
                bad.skip("missing image file", len(entry["gt_texts"]), example=entry["img_path"])
            else:
                data_list.append(entry)
        bad.report()
        self.num_bad_annotations = bad.total
        self.bad_annotations = bad  # counts and examples by reason (tools/check_data.py)
        return data_list

    def _karpathy(self, images: list, prefix: str) -> List[dict]:
        entries = []
        for img in images:
            if self.split is not None and img.get("split") not in self.split:
                continue
            texts = [s.get("raw", " ".join(s.get("tokens", []))).strip() for s in img.get("sentences", [])]
            img_id = img.get("cocoid", img.get("imgid"))
            entries.append(dict(img_path=os.path.join(prefix, img.get("filepath", ""), img["filename"]),
                                img_id=img_id, task="caption", gt_texts=[t for t in texts if t]))
        return entries

    def _coco(self, data: dict, prefix: str) -> List[dict]:
        captions, styles = {}, {}
        for ann in data.get("annotations", []):
            text = str(ann.get("caption", "")).strip()
            if text:
                captions.setdefault(ann["image_id"], []).append(text)
                styles.setdefault(ann["image_id"], []).append(ann.get("style"))
        entries = []
        for img in data.get("images", []):
            entry = dict(img_path=os.path.join(prefix, img["file_name"]), img_id=img["id"], task="caption",
                         gt_texts=captions.get(img["id"], []))
            if self.read_styles and any(styles.get(img["id"], [])):
                entry["gt_text_styles"] = styles[img["id"]]
            if "height" in img and "width" in img:
                entry.update(height=img["height"], width=img["width"])
            entries.append(entry)
        return entries
