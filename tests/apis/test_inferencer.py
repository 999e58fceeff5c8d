"""The inference API and CLI on the tiny test model: every task, every kind of bad input."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_model import write_tiny_config
from visionllm.apis.inputs import InputError
from visionllm.instructions import format_category_set
from visionllm.tasks import build_instruction
import random

pytestmark = pytest.mark.slow  # the whole tiny model

DET = 'Detect {cats} in <image>. Answer as a list of (c, x1, y1, x2, y2).'


@pytest.fixture(scope="module")
def inferencer(tmp_path_factory, tiny_llm_dir, tiny_workspace):  # noqa: F811
    from visionllm.apis.inferencer import VisionLLMInferencer
    config = write_tiny_config(tmp_path_factory.mktemp("infer_cfg"), tiny_llm_dir)
    return VisionLLMInferencer(config)


@pytest.fixture(scope="module")
def image_path(tiny_workspace):  # noqa: F811
    folder = os.path.join(tiny_workspace, "data", "shapes", "images", "val")
    return os.path.join(folder, sorted(os.listdir(folder))[0])


def test_every_task_and_picture(inferencer, image_path, tmp_path):
    rng = random.Random(0)
    instructions = {
        "detection": build_instruction("detection", rng, categories=["circle", "star"]).text,
        "segmentation": build_instruction("segmentation", rng, categories=["circle"], num_points=8).text,
        "grounding": build_instruction("grounding", rng, expression="the red circle").text,
        "caption": build_instruction("caption", rng).text,
        "vqa": build_instruction("vqa", rng, question="how many stars are there?").text,
    }
    h, w = np.asarray(Image.open(image_path)).shape[:2]
    for task, text in instructions.items():
        result = inferencer(image_path, text)
        assert result.task == task and result.image_size == (h, w)
        if task in ("caption", "vqa"):
            assert isinstance(result.text, str) and 0.0 < result.text_probability <= 1.0
        else:
            assert result.text_probability is None
            assert result.boxes.shape[1] == 4 and len(result.scores) == len(result.boxes)
            assert (result.boxes[:, 0::2] <= w + 1e-3).all() and (result.boxes[:, 1::2] <= h + 1e-3).all()
            assert all(name in result.categories for name in result.names)
        if task == "segmentation":
            # the (untrained) model emits the format tokens itself, so K may differ from the 8 asked
            assert result.polygons.shape[2] == 2 and result.polygons.shape[1] >= 2 and result.masks.shape[1:] == (h, w)
        if task == "grounding":
            assert len(result.boxes) == 1
        out = inferencer.visualize(image_path, result, str(tmp_path / f"{task}.png"))
        assert Image.open(out).size[0] >= w


def test_image_tokens_are_the_tokenizer_output_for_the_instruction(inferencer, image_path):
    text = "<image> Describe the image."
    tokens = inferencer.image_tokens(image_path, text)
    num_tokens = tokens["embeds"].shape[0]
    assert tokens["reference_points"].shape == (num_tokens, 2)
    assert ((tokens["reference_points"] >= 0) & (tokens["reference_points"] <= 1)).all()
    model = inferencer.model
    with torch.no_grad():
        torch.testing.assert_close(tokens["llm_embeds"], model.token_projection(tokens["embeds"]))
    with pytest.raises(InputError, match="<image>"):
        inferencer.image_tokens(image_path, "Describe the image.")


def test_image_kinds_and_batches(inferencer, image_path, tmp_path):
    rgb = np.asarray(Image.open(image_path).convert("RGB"))
    text = DET.format(cats=format_category_set(["circle", "square"]))
    gray16 = (rgb[:, :, 0].astype(np.uint16) * 257)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    results = inferencer([rgb, Image.fromarray(rgb).convert("L"), gray16, rgba], text)
    assert len(results) == 4
    reference = results[0]
    np.testing.assert_allclose(results[3].boxes, reference.boxes, atol=1e-4)  # opaque RGBA == RGB


def test_huge_image_is_resized_and_boxes_map_back(inferencer, tmp_path):
    path = tmp_path / "huge.png"
    Image.new("RGB", (10000, 10000), (30, 120, 200)).save(path)
    result = inferencer(path, DET.format(cats=format_category_set(["circle"])))
    assert result.image_size == (10000, 10000)
    assert (result.boxes >= 0).all() and (result.boxes <= 10000).all()


def test_many_categories_run_in_passes(inferencer, image_path):
    names = [f"thing {i}" for i in range(40)]  # the tiny decoder has 16 class tokens
    result = inferencer(image_path, DET.format(cats=format_category_set(names)))
    assert set(result.names) <= set(names)
    assert result.labels.max(initial=0) < 40


def test_a_score_threshold_returns_the_objects_scoring_above_it(inferencer, image_path, monkeypatch):
    """With ``score_threshold`` the result is the full result's objects at or above it (the
    model then decodes only those; forced here for the tiny model's few slots)."""
    from visionllm.models.llm import parallel_decoding
    monkeypatch.setattr(parallel_decoding, "PRUNING_MIN_POSITIONS", 1)
    segment = build_instruction("segmentation", random.Random(0), categories=["circle", "square", "star"],
                                num_points=8, template_index=0).text
    full = inferencer(image_path, segment)
    threshold = float(np.median(full.scores))
    kept = full.scores >= threshold
    assert 0 < kept.sum() < len(kept)
    above = inferencer(image_path, segment, score_threshold=threshold)
    assert above.names == [n for n, k in zip(full.names, kept) if k]
    np.testing.assert_allclose(above.scores, full.scores[kept], atol=1e-5)
    np.testing.assert_allclose(above.boxes, full.boxes[kept], atol=0.05)
    with pytest.raises(InputError, match="score_threshold"):
        inferencer(image_path, segment, score_threshold=1.5)


@pytest.mark.parametrize("image, text, message", [
    ("missing.png", None, "not found"),
    ("corrupt", None, "cannot read image"),
    (None, "Write a short caption for the image.", "<image>"),
    (None, "Detect {} in <image> as (c, x1, y1, x2, y2).", "category set is empty"),
    (None, 'Segment {"a": <c0>} in <image> as (c, x1, y1, ..., x40, y40).', "cannot produce"),
])
def test_bad_input_gives_one_line_errors(inferencer, image_path, tmp_path, image, text, message):
    if image == "corrupt":
        image = tmp_path / "corrupt.png"
        image.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    elif image == "missing.png":
        image = tmp_path / "missing.png"
    else:
        image = image_path
    with pytest.raises(InputError, match=message) as err:
        inferencer(image, text or DET.format(cats=format_category_set(["circle"])))
    assert "\n" not in str(err.value)


def test_cli_prints_one_line_error(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch, capsys):  # noqa: F811
    """A missing checkpoint is named before the model is built."""
    from tools.infer import main
    from visionllm.registry import MODELS

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built")
    monkeypatch.setattr(MODELS, "build", no_build)

    config = write_tiny_config(tmp_path, tiny_llm_dir)
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 10)).save(image)
    monkeypatch.chdir(tiny_workspace)
    assert main([config, str(tmp_path / "no_checkpoint.pth"), str(image), "--instruction", "<image> hi"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: checkpoint not found: {tmp_path / 'no_checkpoint.pth'}"


# ---------------------------------------------------------------- pixels of the input image
# The decoder decodes every point in pixels of the image the model saw (``img_shape``, after the
# infer pipeline's resize); its merge step maps them to ``ori_shape`` with the ``scale_factor``
# the inferencer and the pipeline record. A stub decoder that puts its points at known fractions
# of the resized image therefore pins the exact pixels the API must return: the same fractions of
# the input image as given, whatever the resize or the reduction while decoding did.
BOX = (0.1, 0.2, 0.7, 0.9)  # x1, y1, x2, y2 as fractions of the image


def _ring(num_points: int) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, num_points, endpoint=False)
    return np.stack([0.5 + 0.3 * np.cos(angle), 0.5 + 0.35 * np.sin(angle)], axis=1)


@pytest.fixture
def fraction_decoder(inferencer, monkeypatch):
    """The decoder with its slot decoding replaced: slot 0 (score 0.9, first category) at BOX, or
    at the ring ``_ring(K)`` for K-point polygons, in pixels of ``img_shape``; the other slots
    score 0 (below the score threshold). The format is read from the instruction (the untrained model's own is random)."""
    from visionllm.models.llm.postprocess import SlotPredictions
    decoder = inferencer.model.task_decoder
    seen = []

    def decode_slots(group_hidden, refs, sample, num_categories, offset, fields, *args, **kwargs):
        h, w = sample.metainfo["img_shape"][:2]
        seen.append(dict(img_shape=(h, w), scale_factor=sample.metainfo["scale_factor"]))
        num_slots, num_points = group_hidden.shape[0], (len(fields) - 1) // 2
        fractions = np.asarray(BOX).reshape(2, 2) if num_points == 2 else _ring(num_points)
        points = torch.as_tensor(fractions, dtype=torch.float32) * torch.tensor([float(w), float(h)])
        scores = torch.zeros(num_slots)
        scores[0] = 0.9
        return SlotPredictions(scores=scores, labels=torch.zeros(num_slots, dtype=torch.long) + offset,
                               points=points.expand(num_slots, -1, -1).clone())

    monkeypatch.setattr(decoder, "_decode_slots", decode_slots)
    monkeypatch.setattr(decoder, "generate_format", False)
    monkeypatch.setattr(decoder, "score_thr", 0.5)  # one mask per image, even for the huge ones
    return seen


def _save(tmp_path, name, image: Image.Image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("kind", ["wide array", "portrait grey file", "grey 16-bit array", "huge png", "huge jpeg"])
def test_boxes_and_polygons_come_back_in_pixels_of_the_input(inferencer, fraction_decoder, tmp_path, kind):
    rng = np.random.default_rng(0)
    if kind == "wide array":  # 300 x 120: resized 96 x 38, so x and y scale differently
        image, (h, w) = rng.integers(0, 255, (120, 300, 3), dtype=np.uint8), (120, 300)
    elif kind == "portrait grey file":
        image, (h, w) = _save(tmp_path, "grey.png", Image.fromarray(rng.integers(0, 255, (250, 170), dtype=np.uint8))), (250, 170)
    elif kind == "grey 16-bit array":
        image, (h, w) = rng.integers(0, 65535, (90, 210), dtype=np.uint16), (90, 210)
    elif kind == "huge png":  # reduced 3x while decoding (PIL reduce), then resized
        image, (h, w) = _save(tmp_path, "huge.png", Image.new("L", (9000, 6000), 90)), (6000, 9000)
    else:  # reduced 2x while decoding (JPEG draft), then resized
        image, (h, w) = _save(tmp_path, "huge.jpg", Image.new("RGB", (8000, 4800), (10, 200, 90)), quality=50), (4800, 8000)
    box_text = DET.format(cats=format_category_set(["circle", "square"]))
    polygon_text = 'Segment {"circle": <c0>} in <image>. Answer as a list of (c, x1, y1, ..., x8, y8).'
    box, polygon = inferencer(image, box_text), inferencer(image, polygon_text)
    decoded_h, decoded_w = fraction_decoder[0]["img_shape"]
    assert max(decoded_h, decoded_w) <= 96 and (decoded_h, decoded_w) != (h, w)  # the model saw a resized image
    size = np.array([w, h], np.float64)
    assert box.image_size == (h, w) and box.names[0] == "circle"
    np.testing.assert_allclose(box.boxes[0], np.asarray(BOX) * np.tile(size, 2), rtol=1e-5, atol=1e-3)
    expected = _ring(8) * size
    assert len(box.boxes) == 1 and polygon.polygons.shape == (1, 8, 2)
    np.testing.assert_allclose(polygon.polygons[0], expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(polygon.boxes[0], [*expected.min(0), *expected.max(0)], rtol=1e-5, atol=1e-3)
    # The mask is in the input's pixels too: its extent is the polygon's, to a pixel.
    mask = polygon.masks[0]
    assert mask.shape == (h, w)
    ys, xs = np.nonzero(mask)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], polygon.boxes[0], atol=1.0)


def test_untrained_model_starts_with_its_new_parts_at_identity_and_logs_quietly(tmp_path, tiny_llm_dir, tiny_workspace, capfd):  # noqa: F811
    """Without a checkpoint the inferencer initialises the model as the runner does (zero-initialised
    read-outs and refinements start at zero), and without a log file mmengine's per-parameter
    initialisation report stays off the console."""
    from visionllm.apis.inferencer import VisionLLMInferencer
    capfd.readouterr()
    model = VisionLLMInferencer(write_tiny_config(tmp_path, tiny_llm_dir)).model
    printed = capfd.readouterr()
    assert "torch.Size" not in printed.out + printed.err
    zero_at_start = [name for name in dict(model.named_parameters())
                     if name.endswith(("instruction_relevance.embedding", "relational_alignment.out.1.weight",
                                       "region_readout.projection.weight"))
                     or ("_refinement.deltas" in name and ".2." in name)]
    # the relevance vector, the alignment output, the region read-out, both refinements
    assert len(zero_at_start) >= 5, zero_at_start
    params = dict(model.named_parameters())
    for name in zero_at_start:
        assert not params[name].detach().any(), f"{name} should start at zero"
