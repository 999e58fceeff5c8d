"""Parts of the server without a model: the JSON answer of a result, reading uploads and form
fields, presets, the page's region box."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from visionllm.apis.inferencer import VisionLLMResult, check_request, describe_instruction
from visionllm.apis.inputs import InputError
from visionllm.apis.server import (check_score_threshold, open_upload, parse_history_field,
                                   parse_regions_field, result_to_dict)


def _result(task="detection", polygons=False, text=None):
    boxes = np.array([[1.5, 2.0, 30.25, 40.0], [5.0, 6.0, 7.0, 8.0], [0.0, 0.0, 10.0, 12.0]], np.float32)
    result = VisionLLMResult(task=task, instruction="", image_size=(120, 160), categories=["circle", "star"],
                             boxes=boxes, scores=np.array([0.9, 0.1, 0.5], np.float32),
                             labels=np.array([1, 0, 0]), text=text)
    if polygons:
        result.polygons = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    return result


def test_result_to_dict_schema_and_threshold():
    answer = result_to_dict(_result(), elapsed_ms=12.34, score_threshold=0.3)
    assert set(answer) == {"task", "text", "text_probability", "objects", "regions", "region_names", "image_size",
                           "elapsed_ms"}
    assert answer["task"] == "detection" and answer["text"] is None
    assert answer["image_size"] == [160, 120]  # [w, h] from the result's (h, w)
    assert answer["elapsed_ms"] == 12.3
    assert [o["name"] for o in answer["objects"]] == ["star", "circle"]  # the 0.1 slot is dropped
    first = answer["objects"][0]
    assert set(first) == {"name", "score", "box", "polygon"}
    assert first["box"] == [1.5, 2.0, 30.25, 40.0] and first["polygon"] is None
    assert first["score"] == pytest.approx(0.9)
    assert len(result_to_dict(_result(), 1.0, score_threshold=0.0)["objects"]) == 3


def test_result_to_dict_polygons_grounding_and_text():
    answer = result_to_dict(_result("segmentation", polygons=True), 1.0, score_threshold=0.0)
    assert answer["objects"][2]["polygon"] == [[16.0, 17.0], [18.0, 19.0], [20.0, 21.0], [22.0, 23.0]]
    # The one box of grounding is the answer whatever its score.
    grounding = _result("grounding")
    grounding.boxes, grounding.scores, grounding.labels = grounding.boxes[1:2], grounding.scores[1:2], grounding.labels[1:2]
    assert len(result_to_dict(grounding, 1.0, score_threshold=0.3)["objects"]) == 1
    caption = VisionLLMResult(task="caption", instruction="", image_size=(10, 20), text="two red circles",
                              text_probability=0.25)
    assert result_to_dict(caption, 1.0) == dict(task="caption", text="two red circles", text_probability=0.25,
                                                objects=[], regions=None, region_names=None, image_size=[20, 10],
                                                elapsed_ms=1.0)


def _png_bytes(size=(40, 30), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def test_open_upload_reads_images_and_refuses_bad_bytes():
    image = open_upload(_png_bytes(), "a.png")
    assert image.size == (40, 30)
    with pytest.raises(InputError, match=r"^cannot read image x\.png: cannot identify image file 'x\.png'$"):
        open_upload(b"no image here", "x.png")
    with pytest.raises(InputError, match="cannot read image cut.png"):
        open_upload(_png_bytes((300, 300))[:200], "cut.png")
    with pytest.raises(InputError, match="empty"):
        open_upload(b"", "e.png")


def test_score_threshold_range():
    assert check_score_threshold(None) == 0.3 and check_score_threshold(0.0) == 0.0
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError, match="score_threshold"):
            check_score_threshold(bad)


def test_presets_are_instructions_of_their_task():
    from visionllm.apis.web_page import PRESETS, preset_instruction

    for preset, task in PRESETS.items():
        text = preset_instruction(preset, categories=["circle", "star"], expression="the big star",
                                  question="how many stars are there?")
        assert describe_instruction(text)["task"] == task
    assert '"circle"' in preset_instruction("detect", categories=["circle"])
    assert "the big star" in preset_instruction("ground", expression="the big star")


def test_result_to_dict_echoes_the_regions():
    result = _result()
    assert result_to_dict(result, 1.0)["regions"] is None
    result.regions = np.array([[1.0, 2.0, 30.5, 40.0]], np.float32)
    assert result_to_dict(result, 1.0)["regions"] == [[1.0, 2.0, 30.5, 40.0]]
    result.region_names = ["two red squares"]
    assert result_to_dict(result, 1.0)["region_names"] == ["two red squares"]


def test_regions_field_reads_json_lists_and_refuses_the_rest():
    assert parse_regions_field(None) is None and parse_regions_field("  ") is None
    assert parse_regions_field("[[1, 2, 30, 40], [0, 0, 5.5, 6]]") == [[1, 2, 30, 40], [0, 0, 5.5, 6]]
    with pytest.raises(InputError, match=r"^form field 'regions' is not valid JSON .*expected a list of"):
        parse_regions_field("[[1, 2, 30, 40]")
    with pytest.raises(InputError, match="must be a JSON list of"):
        parse_regions_field('{"x1": 1}')
    with pytest.raises(InputError, match="not valid JSON"):
        parse_regions_field("1,2,3,4")  # a bare list of numbers is not JSON


def test_history_field_reads_turns_and_refuses_the_rest():
    turns = [{"user": "<image> Describe it.", "assistant": "a red circle"}]
    assert parse_history_field(None) is None and parse_history_field("[]") is None
    assert parse_history_field(json.dumps(turns)) == turns
    with pytest.raises(InputError, match=r"^form field 'history' is not valid JSON"):
        parse_history_field("[{'user': 'x'}]")
    with pytest.raises(InputError, match="must be a JSON list of turns, got dict"):
        parse_history_field(json.dumps(turns[0]))
    for bad in ([{"user": "<image> a"}], [{"user": 1, "assistant": "b"}], ["<image> a"],
                [{"user": "<image> a", "assistant": "b", "extra": "c"}]):
        with pytest.raises(InputError, match="^history turn 0 must be an object with the text fields"):
            parse_history_field(json.dumps(bad))
    with pytest.raises(InputError, match="history turn 0 contains <region>"):
        parse_history_field(json.dumps([{"user": "<image> What colour is <region>?", "assistant": "red"}]))


def test_check_request_checks_regions_against_the_upload_and_history_against_the_instruction():
    image = open_upload(_png_bytes((40, 30)), "a.png")
    check_request(image, "<image> What colour is <region>?", [[1, 2, 39, 29]])
    check_request(image, "How many are there?", None, [{"user": "<image> Describe it.", "assistant": "a star"}])
    with pytest.raises(InputError, match="outside the 40x30 image"):
        check_request(image, "<image> What colour is <region>?", [[1, 2, 41, 29]])
    with pytest.raises(InputError, match=r"1 <region> placeholder\(s\) but 0 region"):
        check_request(image, "<image> What colour is <region>?", None)
    with pytest.raises(InputError, match="no <region> placeholder"):
        check_request(image, "<image> Describe it.", [[1, 2, 3, 4]])
    with pytest.raises(InputError, match="exactly one <image>"):  # the follow-up shows the image again
        check_request(image, "<image> How many?", None, [{"user": "<image> Describe it.", "assistant": "a star"}])
    with pytest.raises(InputError, match="history turn 0 contains <region>"):
        check_request(image, "Why?", None, [{"user": "<image> What colour is <region>?", "assistant": "red"}])
    # A plain request is left to the model (it decides the task), template syntax is read in full.
    check_request(image, "Detect the stars in <image>.")
    with pytest.raises(InputError, match="category set is empty"):
        check_request(image, "Detect {} in <image> as (c, x1, y1, x2, y2).")


def test_page_region_box_from_two_clicks_and_typed_text():
    from visionllm.apis.web_page import add_corner, parse_region_text, region_words, regions_for

    text, corner, note = add_corner("", None, (30, 12))
    assert (text, corner) == ("", (30, 12)) and "(30, 12)" in note
    text, corner, _ = add_corner(text, corner, (5, 40))  # any two opposite corners
    assert (text, corner) == ("5,12,30,40", None)
    text, corner, _ = add_corner(text, None, (1, 1))
    text, corner, _ = add_corner(text, corner, (2, 3))
    assert text == "5,12,30,40; 1,1,2,3"
    same, corner, note = add_corner(text, (4, 4), (4, 9))  # no area: nothing added, start over
    assert same == text and corner is None and "no area" in note
    assert parse_region_text(text) == [[5, 12, 30, 40], [1, 1, 2, 3]]
    assert parse_region_text("[1, 2, 3.5, 4]\n5 6 7 8") == [[1, 2, 3.5, 4], [5, 6, 7, 8]]
    assert parse_region_text("  ") is None
    with pytest.raises(InputError, match=r"^regions: '1,2,3' is not four numbers"):
        parse_region_text("1,2,3")
    with pytest.raises(InputError, match="is not four numbers"):
        parse_region_text("a,b,c,d")
    # The box is used by instructions with <region> only (it may hold an earlier question's box).
    assert regions_for("<image> What colour is <region>?", text) == [[5, 12, 30, 40], [1, 1, 2, 3]]
    assert regions_for("How many are there?", text) is None
    # In later turns a region is words: its box divided by the image width / height.
    assert region_words("<image> Is <region> left of <region>?", [[10, 0, 20, 30], [0, 15, 40, 30]], (30, 40)) \
        == "<image> Is [0.25, 0.00, 0.50, 1.00] left of [0.00, 0.50, 1.00, 1.00]?"


def test_region_preset_is_a_region_question():
    from visionllm.apis.web_page import REGION_PRESET, preset_instruction
    from visionllm.instructions import count_regions

    text = preset_instruction(REGION_PRESET)
    assert count_regions(text) == 1 and describe_instruction(text)["task"] == "region_vqa"
