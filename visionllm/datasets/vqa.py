"""VQAv2 reader (questions + annotations json)."""
import os
from collections import Counter
from typing import List, Optional, Sequence, Union

from mmengine.dataset import BaseDataset

from visionllm.registry import DATASETS

from .base import BadAnnotations, join_root, load_annotation, load_image_boxes


@DATASETS.register_module()
class VQAv2Dataset(BaseDataset):
    """Visual question answering, one sample per question.

    Args:
        ann_file: the questions json (``{"questions": [{image_id, question, question_id}]}``).
        answers_file: the annotations json (``{"annotations": [{question_id, answers: [{answer}],
            multiple_choice_answer}]}``); omit it for test-dev (no answers).
        image_info_file: a COCO json whose ``images`` give each ``file_name``; without it the
            name is ``img_name_template.format(subtype=data_subtype, image_id=...)``, the COCO
            convention ``COCO_val2014_000000000042.jpg``.
        boxes_file: optional COCO instances json (or a list of them) of the same images; its
            boxes become the sample's ``instances`` (label -1) so the image tokenizer learns to
            put tokens on the objects the question may be about (``load_image_boxes``).
        answer_types: keep only the questions whose annotated ``answer_type`` (VQAv2's "yes/no",
            "number", "other") is one of these, e.g. a second entry of a training mixture that
            gives the open-answer questions (colours, kinds, sides) a share of their own; needs
            ``answers_file``. Default: every question.

    data_info: ``img_path, img_id, task='vqa', question, question_id, gt_texts (the 10 human
    answers), target_text (the most frequent answer)`` (+ ``instances`` with ``boxes_file``).
    """

    METAINFO = dict(task="vqa")

    def __init__(self, *args, answers_file: str = "", image_info_file: str = "",
                 img_name_template: str = "COCO_{subtype}_{image_id:012d}.jpg", check_image_files: bool = True,
                 boxes_file: Union[str, Sequence[str]] = "", answer_types: Optional[Sequence[str]] = None,
                 **kwargs):
        if answer_types is not None:
            if isinstance(answer_types, str) or not answer_types:
                raise ValueError(f"answer_types must be a non-empty list of VQA answer types, got {answer_types!r}")
            if not answers_file:
                raise ValueError("answer_types selects questions by their annotated answer type: give answers_file")
        self.answer_types = None if answer_types is None else set(answer_types)
        root = kwargs.get("data_root")
        self.answers_file = join_root(root, answers_file)
        self.image_info_file = join_root(root, image_info_file)
        self.boxes_file = join_root(root, boxes_file)
        self.img_name_template = img_name_template
        self.check_image_files = check_image_files
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        questions = load_annotation(self.ann_file)
        answers = {}
        if self.answers_file:
            for ann in load_annotation(self.answers_file).get("annotations", []):
                answers[ann["question_id"]] = ann
        file_names = {}
        if self.image_info_file:
            file_names = {img["id"]: img["file_name"] for img in load_annotation(self.image_info_file)["images"]}
        boxes = load_image_boxes(self.boxes_file) if self.boxes_file else None
        subtype = questions.get("data_subtype", "")
        prefix = self.data_prefix.get("img_path", self.data_prefix.get("img", ""))
        bad = BadAnnotations(f"{type(self).__name__}({self.ann_file})")
        exists = {}
        data_list = []
        for q in questions.get("questions", []):
            image_id = q["image_id"]
            name = file_names.get(image_id) or self.img_name_template.format(subtype=subtype, image_id=image_id)
            path = os.path.join(prefix, name)
            if self.check_image_files:
                if path not in exists:
                    exists[path] = os.path.isfile(path)
                if not exists[path]:
                    bad.skip("missing image file", example=path)
                    continue
            entry = dict(img_path=path, img_id=image_id, task="vqa", question=q["question"],
                         question_id=q["question_id"], gt_texts=[], target_text=None)
            if boxes is not None:
                entry["instances"] = boxes.get(image_id, [])
            if self.answers_file:
                ann = answers.get(q["question_id"])
                if ann is None:
                    bad.skip("question without answers", example=q["question_id"])
                    continue
                texts = [a["answer"] for a in ann.get("answers", []) if str(a.get("answer", "")).strip()]
                entry["gt_texts"] = texts
                entry["target_text"] = ann.get("multiple_choice_answer") or (
                    Counter(texts).most_common(1)[0][0] if texts else None)
                if ann.get("answer_type"):  # VQAv2's "yes/no", "number", "other" (VQAAccuracy reports each)
                    entry["answer_type"] = ann["answer_type"]
                if self.answer_types is not None and entry.get("answer_type") not in self.answer_types:
                    continue
            data_list.append(entry)
        bad.report()
        self.num_bad_annotations = bad.total
        self.bad_annotations = bad  # counts and examples by reason (tools/check_data.py)
        return data_list
