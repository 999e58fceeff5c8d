"""The inference API with a stubbed model: explicit instructions run as written, plain requests
run the task of the model's canonical form, unreadable forms fall back to the rule-based
reading, unsupported requests are refused with the list of tasks."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

from visionllm.apis.inferencer import VisionLLMInferencer
from visionllm.apis.inputs import InputError
from mmdet.structures import DetDataSample
from visionllm.tasks import get_task, templates_of

IMAGE = np.zeros((40, 60, 3), np.uint8)


class StubInferencer(VisionLLMInferencer):
    """Answers the request task with a fixed canonical form; every other task with one box or a text."""

    def __init__(self, canonical: str, polygon_points: int = 16):
        self.cfg = Config(dict(eval_polygon_points=polygon_points))
        self.canonical = canonical
        self.calls = []
        self.model = self._predict

    def _model_inputs(self, chunk, description):
        return dict(descriptions=[description] * len(chunk))

    def _predict(self, descriptions, mode):
        assert mode == "predict"
        samples = []
        for description in descriptions:
            self.calls.append(description)
            sample = DetDataSample()
            if description["task"] == "request":
                sample.pred_text = self.canonical
            elif get_task(description["task"]).structured:
                sample.pred_instances = InstanceData(bboxes=torch.tensor([[1.0, 2.0, 10.0, 12.0]]),
                                                     scores=torch.ones(1), labels=torch.zeros(1, dtype=torch.long))
            else:
                sample.pred_text = "two"
            samples.append(sample)
        return samples


def test_a_plain_detection_request_runs_the_models_canonical_form():
    inferencer = StubInferencer("detection: star; hexagon")
    result = inferencer(IMAGE, "Find all stars and hexagons in <image>.")
    wrapper, run = inferencer.calls
    assert wrapper["task"] == "request" and "Find all stars and hexagons in the image." in wrapper["instruction"]
    assert run["task"] == result.task == "detection"
    assert result.instruction == ('Detect every object of the categories {"star": <c0>, "hexagon": <c1>} in <image>. '
                                  "Answer as a list of (c, x1, y1, x2, y2).") == run["instruction"]
    assert result.categories == ["star", "hexagon"] and result.names == ["star"] and len(result.boxes) == 1
    assert (result.understanding, result.request, result.canonical) == \
        ("model", "Find all stars and hexagons in <image>.", "detection: star; hexagon")


def test_grounding_vqa_and_segmentation_from_the_canonical_form():
    result = StubInferencer("grounding: the red square")(IMAGE, "Please locate the red square in <image>.")
    assert result.task == "grounding" and result.categories == ["the red square"]
    assert result.instruction.startswith(templates_of("grounding")[0].split("{")[0])
    result = StubInferencer("vqa: how many triangles are there?")(IMAGE, "How many triangles are in <image>?")
    assert result.task == "vqa" and result.text == "two"
    assert result.instruction == "<image> Answer the question: how many triangles are there?"
    result = StubInferencer("segmentation: star", polygon_points=8)(IMAGE, "Outline every star in <image>.")
    assert result.task == "segmentation" and result.instruction.count("x8, y8") == 1  # the config's polygon size


def test_explicit_instructions_run_as_written_without_asking_the_model():
    explicit = ['Detect {"star": <c0>} in <image>. Answer as a list of (c, x1, y1, x2, y2).',
                "<image> Write a short caption for the image.",
                *(phrasings[0] for phrasings in get_task("caption").style_templates.values()),  # caption styles
                "<image> Answer the question: is there a red star?"]
    for instruction in explicit:
        inferencer = StubInferencer("unsupported")  # would be refused if the model were asked
        result = inferencer(IMAGE, instruction)
        assert [c["task"] for c in inferencer.calls] == [result.task] and result.instruction == instruction
        assert result.understanding == "explicit" and result.canonical is None


def test_a_caption_request_keeps_the_style_its_words_ask_for():
    caption = get_task("caption")
    for request, style in [("Tell me just how many shapes are in <image>.", "count"),
                           ("Describe <image> without the colours.", "kinds"),
                           ("What is in <image>?", None)]:
        result = StubInferencer("caption")(IMAGE, request)
        assert result.task == "caption" and result.understanding == "model"
        assert result.instruction == (caption.templates[0] if style is None else caption.style_templates[style][0])


def test_one_canonical_form_for_a_batch_of_images():
    inferencer = StubInferencer("caption")
    results = inferencer([IMAGE, IMAGE, IMAGE], "<image> What do you see?")
    assert [c["task"] for c in inferencer.calls] == ["request", "caption", "caption", "caption"]
    assert all(r.task == "caption" and r.understanding == "model" for r in results)


def test_an_unreadable_canonical_form_falls_back_to_the_rule_based_reading():
    result = StubInferencer("a red star")(IMAGE, "<image> Is the hexagon orange?")
    assert result.task == "vqa" and result.instruction == "<image> Is the hexagon orange?"
    assert (result.understanding, result.canonical) == ("fallback", "a red star")
    with pytest.raises(InputError, match="output format"):  # the rule-based reading's own message
        StubInferencer("nonsense")(IMAGE, "Detect the stars in <image>.")


def test_an_unsupported_request_is_refused_with_the_tasks():
    inferencer = StubInferencer("unsupported")
    with pytest.raises(InputError) as err:
        inferencer(IMAGE, "<image> Translate this into French.")
    message = str(err.value)
    assert "\n" not in message and "Translate this into French" in message
    for task in ("detection", "segmentation", "grounding", "caption", "vqa"):
        assert task in message
    assert "request" not in message.split("can do:")[1]
    assert [c["task"] for c in inferencer.calls] == ["request"]  # nothing else was run


def test_an_unsupported_request_in_caption_style_words_is_that_styles_caption():
    caption = get_task("caption")
    for request, style in [("Describe <image> without the colours.", "kinds"),
                           ("Describe where the shapes are relative to each other.", "relation")]:
        result = StubInferencer("unsupported")(IMAGE, request)
        assert result.task == "caption" and result.instruction == caption.style_templates[style][0]
        assert (result.understanding, result.canonical) == ("fallback", "unsupported")
    # a question with counting words is not a count caption
    with pytest.raises(InputError, match="no task serves"):
        StubInferencer("unsupported")(IMAGE, "How many calories are in <image>?")


def test_a_canonical_form_that_cannot_be_what_the_words_ask_is_the_caption_they_ask_for():
    caption = get_task("caption")
    for canonical, request, phrasing in [
            ("grounding: the image", "Describe the image without colors.", caption.style_templates["kinds"][0]),
            ("grounding: this picture", "Tell me about this picture.", caption.templates[0]),
            ("vqa: how many shapes are there?", "Count the shapes, then list them.",
             caption.style_templates["count_objects"][0]),
            ("vqa: what colour is the star?", "Caption this image without mentioning colours.",
             caption.style_templates["kinds"][0]),
            ("grounding: the colouration", "Describe <image> without the colours.", caption.style_templates["kinds"][0]),
            ("segmentation: circle", "Describe where the shapes are relative to each other in <image>.",
             caption.style_templates["relation"][0])]:
        result = StubInferencer(canonical)(IMAGE, request)
        assert result.task == "caption" and result.instruction == phrasing, (request, result.instruction)
        assert (result.understanding, result.canonical) == ("fallback", canonical)
    # the model's reading stands where it can be what the words ask
    assert StubInferencer("grounding: the red square")(IMAGE, "Show me the red square.").task == "grounding"
    assert StubInferencer("vqa: how many shapes are there?")(IMAGE, "Count the shapes.").task == "vqa"
    assert StubInferencer("grounding: the image")(IMAGE, "Where is the image?").task == "grounding"
    # style words without a request for a description leave another task's reading alone
    assert StubInferencer("detection: star")(IMAGE, "Find the stars, ignoring their colours.").task == "detection"


def test_conversation_follow_ups_are_read_as_written():
    inferencer = StubInferencer("unsupported")
    history = [dict(user="<image> Write a short caption for the image.", assistant="a red star")]
    result = inferencer(IMAGE, "and what colour is it?", history=history)
    assert result.task == "vqa" and result.understanding == "explicit"
    assert [c["task"] for c in inferencer.calls] == ["vqa"]


@pytest.mark.parametrize("instruction, message", [
    ('Segment {"a": <c0>} in <image> as (c, x1, y1, ..., x40, y40).', "cannot produce"),
    ("Detect {} in <image> as (c, x1, y1, x2, y2).", "category set is empty"),
    ('Detect {"a": <c1>} in <image> as (c, x1, y1, x2, y2).', "in order"),
    ("", "empty"),
])
def test_mistakes_in_the_template_syntax_are_reported_not_guessed(instruction, message):
    inferencer = StubInferencer("segmentation: a")
    with pytest.raises(InputError, match=message):
        inferencer(IMAGE, instruction)
    assert inferencer.calls == []


def test_instructions_with_regions_are_followed_as_written():
    """A canonical form has no place for the regions: such an instruction is never rewritten."""
    from visionllm.apis.understanding import is_explicit

    assert is_explicit("<image> What colour is <region>? Tell me please.")
    assert not is_explicit("<image> What colour is the star? Tell me please.")
