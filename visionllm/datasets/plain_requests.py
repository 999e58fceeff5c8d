"""``PlainRequestDataset``: plain-language requests about the shapes images, for the
``request`` task (the LLM writes each request's canonical form)."""
import os
from typing import List

import numpy as np
from mmengine.dataset import BaseDataset

from visionllm.registry import DATASETS

from .base import BadAnnotations, join_root, load_annotation, sentences_of
from .plain_request_phrasing import COMPOSED_SHARE, INTENTS, SPLITS, plain_requests
from .shapes import COLOURS


@DATASETS.register_module()
class PlainRequestDataset(BaseDataset):
    """Requests in plain words (``plain_request_phrasing``) over a shapes split, with their
    canonical forms as targets.

    Args:
        ann_file: the split's COCO instances json (kinds from the categories, colours from each
            annotation's ``attributes.colour``).
        refs_file: the split's referring expressions (json list as make_shapes writes it);
            without it no grounding requests are made.
        split: the phrasing split, ``'train'`` or ``'heldout'`` (templates training never sees);
            the image split is the annotation file's.
        requests_per_image: requests drawn per image (intents in turn, so tasks stay balanced).
        composed_share: share of the training split's requests worded by a composed template
            (``plain_request_composition``); 0 draws fixed templates only.
        seed: the draw is fixed by (seed, image id).

    data_info: ``img_path, img_id, task='request', request (the user's words with <image>),
    target_text (the canonical form), gt_texts=[target_text], intended_task (None when
    unsupported), intent, template, answer`` (the true answer of presence questions, else None).
    """

    METAINFO = dict(task="request")

    def __init__(self, *args, refs_file: str = "", split: str = "train", requests_per_image: int = 4,
                 composed_share: float = COMPOSED_SHARE, seed: int = 0, check_image_files: bool = True, **kwargs):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if requests_per_image < 1:
            raise ValueError(f"requests_per_image must be at least 1, got {requests_per_image}")
        if not 0 <= composed_share <= 1:
            raise ValueError(f"composed_share must be in [0, 1], got {composed_share}")
        self.split = split
        self.requests_per_image = requests_per_image
        self.composed_share = composed_share
        self.seed = seed
        self.check_image_files = check_image_files
        self.refs_file = join_root(kwargs.get("data_root"), refs_file)
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        coco = load_annotation(self.ann_file)
        classes = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
        kind_of = {c["id"]: c["name"] for c in coco["categories"]}
        objects = {}
        for ann in coco.get("annotations", []):
            colour = (ann.get("attributes") or {}).get("colour")
            objects.setdefault(ann["image_id"], []).append((kind_of[ann["category_id"]], colour))
        expressions = {}
        for ref in load_annotation(self.refs_file) if self.refs_file else []:
            expressions.setdefault(ref["image_id"], []).extend(sentences_of(ref))
        prefix = self.data_prefix.get("img_path", self.data_prefix.get("img", ""))
        bad = BadAnnotations(f"{type(self).__name__}({self.ann_file})")
        data_list = []
        for image in coco.get("images", []):
            path = os.path.join(prefix, image["file_name"])
            things = objects.get(image["id"], [])
            if self.check_image_files and not os.path.isfile(path):
                bad.skip("missing image file", example=path)
                continue
            if any(colour is None for _, colour in things):
                bad.skip("object without a colour attribute", example=image["id"])
                continue
            rng = np.random.default_rng([self.seed, int(image["id"])])
            for made in plain_requests(things, expressions.get(image["id"], []), classes, list(COLOURS), rng,
                                       self.requests_per_image, self.split,
                                       first_intent=int(image["id"]) % len(INTENTS),
                                       composed_share=self.composed_share):
                data_list.append(dict(img_path=path, img_id=image["id"], height=image.get("height"),
                                      width=image.get("width"), task="request", request=made.request,
                                      target_text=made.canonical, gt_texts=[made.canonical],
                                      intended_task=made.task, intent=made.intent, template=made.template,
                                      answer=made.answer))
        bad.report()
        self.num_bad_annotations = bad.total
        return data_list
