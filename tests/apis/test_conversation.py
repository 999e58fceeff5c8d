"""Conversation: turns kept, each answered with the earlier ones in the prompt; bad turns rejected."""
import os

import numpy as np
import pytest

from tiny_model import write_tiny_config
from visionllm.apis.conversation import Conversation, answer_text
from visionllm.apis.inferencer import VisionLLMResult
from visionllm.apis.inputs import InputError

DET = 'Detect {"circle": <c0>, "star": <c1>} in <image>. Answer as a list of (c, x1, y1, x2, y2).'
FOLLOW_UP = "and how many of them are red?"
GROUND = 'Find "the red circle" and give (c, x1, y1, x2, y2).'


def _result(task, boxes=(), scores=(), labels=(), text=None):
    return VisionLLMResult(task=task, instruction="", image_size=(100, 200), categories=["circle", "star"],
                           boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                           scores=np.asarray(scores, np.float32), labels=np.asarray(labels, np.int64), text=text)


def test_structured_answers_are_written_as_names_and_image_relative_boxes():
    # image 200 wide, 100 high: x / 200, y / 100
    det = _result("detection", [[20, 10, 60, 50], [0, 0, 10, 10], [190, 90, 210, 120]], [0.9, 0.1, 0.5], [1, 0, 0])
    assert answer_text(det) == "star [0.10, 0.10, 0.30, 0.50]; circle [0.95, 0.90, 1.00, 1.00]"
    assert answer_text(det, score_threshold=0.05).count("circle") == 2
    assert answer_text(_result("segmentation", [[0, 0, 10, 10]], [0.2], [0])) == "none"
    # grounding's one box is the answer whatever its score
    assert answer_text(_result("grounding", [[100, 50, 200, 100]], [0.01], [0])) == "circle [0.50, 0.50, 1.00, 1.00]"
    assert answer_text(_result("vqa", text=" three ")) == "three"


@pytest.fixture(scope="module")
def inferencer(tmp_path_factory, tiny_llm_dir, tiny_workspace):
    from visionllm.apis.inferencer import VisionLLMInferencer
    return VisionLLMInferencer(write_tiny_config(tmp_path_factory.mktemp("conversation_cfg"), tiny_llm_dir))


@pytest.fixture(scope="module")
def image_path(tiny_workspace):
    folder = os.path.join(tiny_workspace, "data", "shapes", "images", "val")
    return os.path.join(folder, sorted(os.listdir(folder))[0])


def _spy(inferencer, monkeypatch):
    """Record what the LLM prompt and the image tokenizer read on each call."""
    prompts, tokenizer_texts = [], []
    prompt, tokenizer = inferencer.model.task_decoder.prompt, inferencer.model.image_tokenizer
    encode, forward = prompt.encode_pieces, tokenizer.forward
    monkeypatch.setattr(prompt, "encode_pieces", lambda text, history=None: prompts.append((text, history)) or encode(text, history))
    monkeypatch.setattr(tokenizer, "forward",
                        lambda images, masks, texts: tokenizer_texts.append(list(texts)) or forward(images, masks, texts))
    return prompts, tokenizer_texts


@pytest.mark.slow
def test_each_turn_is_answered_with_the_earlier_turns_in_the_prompt(inferencer, image_path, monkeypatch):
    prompts, tokenizer_texts = _spy(inferencer, monkeypatch)
    conv = Conversation(inferencer, image_path)
    first = conv.ask(DET)
    assert first.task == "detection" and prompts and all(history is None for _, history in prompts)
    said = [dict(user=DET, assistant=answer_text(first))]
    assert conv.history == said

    prompts.clear()
    second = conv.ask(FOLLOW_UP)
    assert second.task == "vqa" and isinstance(second.text, str) and second.instruction == FOLLOW_UP
    assert prompts == [(FOLLOW_UP, said)]
    # the tokenizer reads the follow-up and, for what "them" are, the earlier question
    assert tokenizer_texts[-1] == [f"{FOLLOW_UP} {DET}"]

    prompts.clear()
    third = conv.ask(GROUND)  # a structured follow-up: format and slot passes read the history too
    assert third.task == "grounding" and len(third.boxes) == 1
    said.append(dict(user=FOLLOW_UP, assistant=second.text.strip()))
    assert prompts and all(p == (GROUND, said) for p in prompts)
    assert [t.instruction for t in conv.turns] == [DET, FOLLOW_UP, GROUND]
    assert [t.result for t in conv.turns] == [first, second, third]

    # the same turn asked through the inferencer with that history gives the same answer
    assert inferencer(image_path, FOLLOW_UP, history=said[:1]).text == second.text

    conv.reset()
    assert conv.turns == [] and conv.history == []
    with pytest.raises(InputError, match="first turn"):
        conv.ask(FOLLOW_UP)
    assert conv.ask(DET).task == "detection" and len(conv.turns) == 1


@pytest.mark.slow
@pytest.mark.parametrize("turns, message", [
    (["Describe the image."], "first turn of a conversation shows the image"),
    (["<image> <image> Describe."], r"exactly once \(found 2\)"),
    (["   "], "empty"),
    ([DET, "<image> Now describe it."], "already in the conversation"),
    ([DET, "Detect the stars."], "gives no output format"),
])
def test_bad_turns_are_one_line_input_errors(inferencer, image_path, turns, message):
    conv = Conversation(inferencer, image_path)
    for text in turns[:-1]:
        conv.ask(text)
    with pytest.raises(InputError, match=message) as err:
        conv.ask(turns[-1])
    assert "\n" not in str(err.value)
    assert len(conv.turns) == len(turns) - 1, "a rejected turn is not kept"


@pytest.mark.slow
def test_bad_history_and_image_given_to_the_api(inferencer, image_path, tmp_path):
    with pytest.raises(InputError, match="found 0"):
        inferencer(image_path, FOLLOW_UP, history=[dict(user="Describe it.", assistant="a circle")])
    with pytest.raises(InputError, match="found 2"):
        inferencer(image_path, "<image> " + FOLLOW_UP, history=[dict(user=DET, assistant="none")])
    with pytest.raises(InputError, match="must be a dict"):
        inferencer(image_path, FOLLOW_UP, history=[DET])
    with pytest.raises(InputError, match="history turn 0 contains <region>") as error:
        inferencer(image_path, FOLLOW_UP, history=[dict(user="<image> What colour is <region>?", assistant="red")])
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="not found"):
        Conversation(inferencer, str(tmp_path / "missing.png"))
