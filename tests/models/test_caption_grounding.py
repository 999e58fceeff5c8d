"""Captions grounded in the model's own detections (visionllm.models.caption_grounding): which
samples, their detection samples, the words banned, and the whole model's two passes."""
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

from mmdet.structures import DetDataSample
from visionllm.models.caption_grounding import CaptionGrounding, build_caption_grounding
from visionllm.tasks import read_instruction

NAMES = ["circle", "star", "box"]


def _sample(instruction, **meta):
    sample = DetDataSample()
    sample.set_metainfo(dict(instruction=instruction, img_shape=(64, 96), **meta))
    return sample


def test_arguments_are_checked():
    assert build_caption_grounding(None) is None
    with pytest.raises(ValueError, match="at least one category"):
        CaptionGrounding([])
    with pytest.raises(ValueError, match="distinct"):
        CaptionGrounding(["star", "star"])
    with pytest.raises(ValueError, match="score_threshold"):
        CaptionGrounding(NAMES, score_threshold=1.5)


def test_only_captions_are_grounded_and_their_detection_sample_asks_for_every_category():
    grounding = CaptionGrounding(NAMES, score_threshold=0.4)
    samples = [_sample("<image> Write a short caption for the image."),
               _sample("<image> Answer the question: how many stars are there?"),
               _sample('Detect {"star": <c0>} in <image>. Answer as a list of (c, x1, y1, x2, y2).'),
               _sample("Write a one-sentence caption for <image>.",
                       history=[dict(user="<image> What is it?", assistant="a star")])]
    assert grounding.rows(samples) == [0, 3]
    detect = grounding.detection_sample(samples[3])
    understood = read_instruction(detect.instruction)
    assert understood.task == "detection" and list(understood.categories) == NAMES
    assert detect.categories == NAMES and detect.category_ids == [0, 1, 2]
    assert detect.history is None and detect.score_thr == 0.4
    assert samples[3].instruction.startswith("Write a one-sentence caption") and samples[3].history  # untouched


def test_absent_words_are_the_undetected_categories_singular_and_plural():
    grounding = CaptionGrounding(NAMES, score_threshold=0.5)
    detected = _sample("x")
    detected.pred_instances = InstanceData(scores=torch.tensor([0.9, 0.49, 0.5, 0.2]),
                                           labels=torch.tensor([1, 0, 1, 2]))
    assert grounding.absent_words(detected) == ["box", "boxes", "circle", "circles"]
    detected.pred_instances = InstanceData(scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long))
    assert grounding.absent_words(detected) == ["box", "boxes", "circle", "circles", "star", "stars"]


@pytest.mark.slow
def test_the_model_detects_before_it_captions_and_bans_what_it_did_not_find(tmp_path, monkeypatch, tiny_llm_dir,
                                                                          tiny_workspace):  # noqa: F811
    from tiny_model import build_tiny_model

    cfg, model, _, test_set = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    model.eval()
    model.task_decoder.generate_format = False  # untrained: the format comes from the instruction
    caption = next(test_set[i] for i in range(len(test_set)) if test_set[i]["data_samples"].task == "caption")
    question = next(test_set[i] for i in range(len(test_set)) if test_set[i]["data_samples"].task == "vqa")
    names = list(test_set.datasets[0].metainfo["classes"])

    # The detection the grounding must run, done by hand with the model as it is (no grounding).
    plain = CaptionGrounding(names, score_threshold=0.0)  # every slot decoded
    data = model.data_preprocessor(pseudo_collate([caption]), False)
    with torch.no_grad():
        [found] = model(data["inputs"], [plain.detection_sample(data["data_samples"][0])], mode="predict")
    scores = torch.zeros(len(names))
    for score, label in zip(found.pred_instances.scores.tolist(), found.pred_instances.labels.tolist()):
        scores[label] = max(scores[label], score)
    threshold = float(scores.max())  # the best-scoring category found, the others not
    expected_absent = [name for name, score in zip(names, scores.tolist()) if score < threshold]
    assert threshold > 0 and len(expected_absent) == len(names) - 1

    model.caption_grounding = CaptionGrounding(names, score_threshold=threshold)
    seen = {}
    generate = model.task_decoder.generate_text

    def spy(*args, banned_words=None, **kwargs):
        seen["banned"] = banned_words
        texts = generate(*args, banned_words=banned_words, **kwargs)
        seen["texts"] = texts
        return texts
    monkeypatch.setattr(model.task_decoder, "generate_text", spy)
    data = model.data_preprocessor(pseudo_collate([question, caption]), False)
    with torch.no_grad():
        results = model(**data, mode="predict")
    banned_question, banned_caption = seen["banned"]
    assert banned_question is None
    assert sorted(banned_caption) == sorted(w for name in expected_absent for w in (name, name + "s"))
    assert not set(results[1].pred_text.split()) & set(banned_caption)
    assert [r.task for r in results] == ["vqa", "caption"]  # the samples keep their own task
