"""LLaVA-Instruct conversations become one sample per answer, carrying the earlier turns."""
import json

import numpy as np
import pytest
from PIL import Image

import visionllm.datasets  # noqa: F401  (registers)
from visionllm.datasets.transforms import BuildInstruction, PackVisionLLMInputs
from visionllm.models.llm.prompt import check_turns
from visionllm.registry import DATASETS

TURNS = [("What is shown?\n<image>", "A dog on a sofa."), ("What colour is it?", "Brown."),
         ("Is it asleep?", "Yes, it is sleeping."), ("", "An empty question."), ("Why?", "It is night.")]


def _write(tmp_path):
    (tmp_path / "imgs").mkdir(parents=True)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "imgs" / "1.jpg")
    conversation = [dict(**{"from": side}, value=text) for turn in TURNS for side, text in zip(("human", "gpt"), turn)]
    (tmp_path / "llava.json").write_text(json.dumps([dict(id="7", image="1.jpg", conversations=conversation)]))
    return dict(type="LlavaInstructDataset", ann_file=str(tmp_path / "llava.json"),
                data_prefix=dict(img_path=str(tmp_path / "imgs")))


def test_each_answer_is_a_sample_with_the_earlier_turns_as_history(tmp_path):
    with pytest.warns(UserWarning, match="empty turn: 1"):
        dataset = DATASETS.build(_write(tmp_path))
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    kept = [0, 1, 2, 4]  # the turn with an empty question is no sample, but stays in the history
    assert [info["question_id"] for info in infos] == [f"7_{k}" for k in kept]
    assert [info["target_text"] for info in infos] == [TURNS[k][1] for k in kept]
    assert infos[0]["question"] == "What is shown?" and infos[0]["history"] == []
    for info, k in zip(infos, kept):
        history = info["history"]
        assert [turn["assistant"] for turn in history] == [answer for _, answer in TURNS[:k]]
        if history:
            # LLaVA's layout: the image once, first, in the first human turn
            assert history[0]["user"] == "<image>\nWhat is shown?"
            assert [turn["user"] for turn in history[1:]] == [question for question, _ in TURNS[1:k]]
    one = DATASETS.build(dict(_write(tmp_path / "first_only"), first_turn_only=True))
    assert len(one) == 1 and one.get_data_info(0)["history"] == []


@pytest.mark.filterwarnings("ignore:.*empty turn")
def test_follow_ups_become_prompts_with_the_image_once(tmp_path):
    dataset = DATASETS.build(_write(tmp_path))
    build, pack = BuildInstruction(seed=0), PackVisionLLMInputs()
    for i in range(len(dataset)):
        info = dict(dataset.get_data_info(i), img=np.zeros((30, 40, 3), np.uint8))
        sample = pack(build(info))["data_samples"]
        history = sample.metainfo["history"]
        if history:
            assert sample.instruction == info["question"], "a follow-up is asked as written"
        else:
            assert "<image>" in sample.instruction and info["question"] in sample.instruction
        assert sample.target_text == info["target_text"] and sample.task == "vqa"
        check_turns(sample.instruction, history)  # the prompt builder accepts every sample
