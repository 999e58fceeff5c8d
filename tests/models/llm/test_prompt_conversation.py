"""Prompts of conversations: earlier turns in order, the image once, only the current answer a target."""
import pytest
import torch
from tiny_llm import build_decoder, make_sample

from visionllm.models.llm.prompt import check_turns

pytestmark = pytest.mark.usefixtures("single_thread")

HISTORY = [dict(user='Detect {"circle": <c0>} in <image>. Answer as a list of (c, x1, y1, x2, y2).',
                assistant="circle [0.10, 0.20, 0.30, 0.40]; circle [0.50, 0.50, 0.70, 0.90]"),
           dict(user="Which one is larger?", assistant="the second one")]
FOLLOW_UP = "and what colour is it?"
BOX = ("cls", "x1", "y1", "x2", "y2")


@pytest.fixture(scope="module")
def decoders(tiny_llama_dir):
    return {style: build_decoder(tiny_llama_dir, prompt_style=style, num_slots=2) for style in ("chat", "alpaca")}


def _in_order(text, parts):
    """Positions of ``parts`` in ``text``, each found once, strictly increasing."""
    positions = []
    for part in parts:
        assert text.count(part) == 1, (part, text)
        positions.append(text.index(part))
    return positions == sorted(positions)


@pytest.mark.parametrize("style, user_marker, answer_marker",
                         [("chat", "<|im_start|>user", "<|im_start|>assistant"),
                          ("alpaca", "### Instruction:", "### Response:")])
def test_turns_in_order_with_the_image_once_in_the_first_turn(decoders, style, user_marker, answer_marker):
    decoder = decoders[style]
    before, after = decoder.prompt.encode(FOLLOW_UP, HISTORY)
    text_before, text_after = decoder.tokenizer.decode(before), decoder.tokenizer.decode(after)
    first_before, first_after = HISTORY[0]["user"].split("<image>")
    # the image tokens go between the two halves of the first user turn
    assert text_before.endswith(first_before)
    assert _in_order(text_after, [first_after, HISTORY[0]["assistant"], HISTORY[1]["user"],
                                  HISTORY[1]["assistant"], FOLLOW_UP])
    whole = text_before + "<image>" + text_after
    assert whole.count("<image>") == 1
    assert whole.count(user_marker) == 3 and whole.count(answer_marker) == 3
    # the prompt ends as a single-turn prompt does: where the response starts
    single_after = decoder.tokenizer.decode(decoder.prompt.encode("<image> " + FOLLOW_UP)[1])
    assert text_after.endswith(FOLLOW_UP + single_after.split(FOLLOW_UP)[-1])
    # every earlier answer is closed as the model's own answers end in training
    eos = decoder.tokenizer.eos_token
    for turn in HISTORY:
        assert turn["assistant"] + eos in text_after
    if style == "alpaca":
        assert whole.count("Below is an instruction") == 1


@pytest.mark.parametrize("style", ["chat", "alpaca"])
def test_without_history_the_prompt_is_the_single_turn_prompt(decoders, style):
    decoder = decoders[style]
    assert decoder.prompt.encode("<image> Caption.", []) == decoder.prompt.encode("<image> Caption.")
    assert decoder.prompt.render("<image> Caption.", None) == decoder.prompt.render("<image> Caption.")


@pytest.mark.parametrize("instruction, history, message", [
    ("<image> and the stars?", HISTORY, "exactly one <image> .found 2"),
    ("and the stars?", [dict(user="Describe it.", assistant="a circle")], "found 0"),
    ("<image> Caption.", [dict(user="hi", assistant="see <image>")], "assistant answer of history turn 0"),
    ("and now?", [dict(user="<image> x", assistant="y"), dict(user="<image> again", assistant="z")], "found 2"),
    ("and now?", [dict(user="<image> x")], "history turn 0 must be a dict"),
    ("and now?", ["<image> x"], "history turn 0 must be a dict"),
])
def test_bad_conversations_are_one_line_errors(decoders, instruction, history, message):
    with pytest.raises(ValueError, match=message) as err:
        decoders["chat"].prompt.encode(instruction, history)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=message):
        check_turns(instruction, history)


def _spy(decoder, monkeypatch):
    """Record every assembled batch and every prompt encoded."""
    batches, prompts = [], []
    assemble, encode = decoder._assemble, decoder.prompt.encode_pieces
    monkeypatch.setattr(decoder, "_assemble", lambda rows: batches.append(assemble(rows)) or batches[-1])
    monkeypatch.setattr(decoder.prompt, "encode_pieces",
                        lambda text, history=None: prompts.append((text, history)) or encode(text, history))
    return batches, prompts


def _contains(row, ids):
    row, n = row.tolist(), len(ids)
    return any(row[i:i + n] == ids for i in range(len(row) - n + 1))


@pytest.mark.parametrize("style", ["chat", "alpaca"])
def test_history_is_read_but_only_the_current_answer_is_a_target(decoders, style, monkeypatch):
    decoder = decoders[style]
    text = make_sample("vqa", FOLLOW_UP, target_text="red")
    grounding = make_sample("grounding", 'Find "it" and give (c, x1, y1, x2, y2).', categories=["it"],
                            output_format=BOX, bboxes=[[5.0, 5.0, 20.0, 30.0]], labels=[0])
    for sample in (text, grounding):
        sample.set_metainfo(dict(history=HISTORY))
    batches, prompts = _spy(decoder, monkeypatch)
    losses = decoder.loss(torch.randn(2, 2, 64), torch.rand(2, 2, 2), [text, grounding])
    assert all(v.isfinite() for v in losses.values())
    assert prompts and all(history == HISTORY for _, history in prompts)
    answer_ids = decoder.prompt.text_ids(HISTORY[1]["assistant"])
    eos = decoder.prompt.end_of_response_id
    targets = {"red": decoder.prompt.text_ids("red") + [eos], "format": decoder._format_ids(BOX) + [eos]}
    assert len(batches) == 2
    for batch in batches:
        row = batch.input_ids[0]
        assert _contains(row, answer_ids), "the earlier answer is in the prompt"
        labels = batch.labels[0][batch.labels[0] != -100].tolist()
        assert labels in targets.values(), "only the current answer (or output format) is a target"


def test_predictions_of_every_task_read_the_history(decoders, monkeypatch):
    decoder = decoders["chat"]
    decoder.generate_format = True  # the format pass reads the prompt too
    samples = [make_sample("vqa", FOLLOW_UP),
               make_sample("detection", 'Now detect {"star": <c0>}. Answer as a list of (c, x1, y1, x2, y2).',
                           categories=["star"], output_format=BOX)]
    for sample in samples:
        sample.set_metainfo(dict(history=HISTORY))
    _, prompts = _spy(decoder, monkeypatch)
    try:
        decoder.predict(torch.randn(2, 2, 64), torch.rand(2, 2, 2), samples)
    finally:
        decoder.generate_format = False
    assert {text for text, _ in prompts} == {sample.instruction for sample in samples}
    assert all(history == HISTORY for _, history in prompts)
    assert isinstance(samples[0].pred_text, str) and len(samples[1].pred_instances.bboxes) == 2
