"""LLaVA-Instruct-150K reader (conversations json) as question answering with the earlier turns."""
import os
import re
from typing import List

from mmengine.dataset import BaseDataset

from visionllm.registry import DATASETS

from .base import BadAnnotations, load_annotation

_IMAGE_TOKEN = re.compile(r"\s*<image>\s*")


@DATASETS.register_module()
class LlavaInstructDataset(BaseDataset):
    """``[{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}, ...]}]``.

    Each human turn followed by a gpt turn becomes one sample of task ``'vqa'``: the question is
    the human text without its ``<image>`` marker, the target the gpt reply, and ``history`` the
    conversation's earlier (human, gpt) pairs in order, so only the current reply is a target.
    In the history the first human turn is written as LLaVA feeds it, ``"<image>\n" + text``
    (the image once, in the first turn); the later ones as they are. A first turn has an empty
    history and gets an instruction template around its question (``BuildInstruction``); a
    follow-up is asked as written. ``first_turn_only`` keeps one sample per conversation.

    data_info: ``img_path, img_id, task='vqa', question, target_text, gt_texts=[target_text],
    question_id ("<id>_<turn>"), history=[{"user", "assistant"}, ...]``.
    """

    METAINFO = dict(task="vqa")

    def __init__(self, *args, first_turn_only: bool = False, check_image_files: bool = True, **kwargs):
        self.first_turn_only = first_turn_only
        self.check_image_files = check_image_files
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        records = load_annotation(self.ann_file)
        prefix = self.data_prefix.get("img_path", self.data_prefix.get("img", ""))
        bad = BadAnnotations(f"{type(self).__name__}({self.ann_file})")
        data_list = []
        for record in records:
            turns = record.get("conversations", [])
            path = os.path.join(prefix, record.get("image", ""))
            if not record.get("image") or (self.check_image_files and not os.path.isfile(path)):
                bad.skip("missing image file", example=path if record.get("image") else record.get("id"))
                continue
            pairs = [(turns[i]["value"], turns[i + 1]["value"]) for i in range(len(turns) - 1)
                     if turns[i].get("from") == "human" and turns[i + 1].get("from") == "gpt"]
            if not pairs:
                bad.skip("conversation without a human/gpt pair", example=record.get("id"))
                continue
            history = []
            for turn, (question, answer) in enumerate(pairs[:1] if self.first_turn_only else pairs):
                question, answer = _IMAGE_TOKEN.sub(" ", question).strip(), answer.strip()
                if question and answer:
                    data_list.append(dict(img_path=path, img_id=record.get("id"), task="vqa", question=question,
                                          target_text=answer, gt_texts=[answer],
                                          question_id=f"{record.get('id')}_{turn}", history=list(history)))
                else:
                    bad.skip("empty turn", example=record.get("id"))
                # The turn was said either way: later turns may refer to it.
                user = f"<image>\n{question}" if turn == 0 else question
                history.append(dict(user=user, assistant=answer))
        bad.report()
        self.num_bad_annotations = bad.total
        self.bad_annotations = bad  # counts and examples by reason (tools/check_data.py)
        return data_list
