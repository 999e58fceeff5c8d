"""Plain requests: every canonical form names what its request asks for, held-out wordings
stay out of training, and the wording carries no answer."""
from collections import Counter, defaultdict

import numpy as np
import pytest

from visionllm.datasets.plain_request_composition import fill, shared_runs, words
from visionllm.datasets.plain_request_phrasing import (HELDOUT_EVERY, INTENTS, composed, heldout_templates,
                                                       plain_request, plain_requests, templates)
from visionllm.datasets.shapes import COLOURS, SHAPE_KINDS
from visionllm.tasks import read_canonical, read_instruction

CLASSES = list(SHAPE_KINDS)


def random_image(rng):
    """Objects [(kind, colour)] and expressions as the shapes data has them."""
    objects = [(str(rng.choice(CLASSES)), str(rng.choice(list(COLOURS)))) for _ in range(int(rng.integers(0, 6)))]
    expressions = [f"the {c} {k}" for k, c in objects if objects.count((k, c)) == 1]
    expressions += [f"the {k} on the left" for k, _ in objects[:1]]
    return objects, expressions


def draws(split, n=1500, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        objects, expressions = random_image(rng)
        for made in plain_requests(objects, expressions, CLASSES, list(COLOURS), rng, 3, split, first_intent=i,
                                   **kwargs):
            out.append((made, objects))
    return out


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_canonical_form_reads_as_the_intended_request(split):
    seen = Counter()
    for made, objects in draws(split, 600):
        seen[made.intent] += 1
        assert made.request.count("<image>") == 1
        expanded = read_canonical(made.canonical)
        if made.task is None:
            assert expanded is None
            continue
        parsed = read_instruction(expanded.text)  # the evaluation phrasing reads back as the same request
        assert parsed.task == made.task == expanded.task, made
        if made.intent in ("detect", "segment"):
            assert 1 <= len(parsed.categories) <= 3 and set(parsed.categories) <= set(CLASSES)
            for name in parsed.categories:  # copied from the request's words
                assert name in made.request.lower(), made
        elif made.intent == "detect_all":
            assert parsed.categories == CLASSES
        elif made.intent == "ground":
            assert parsed.categories[0] in made.request.lower() and parsed.categories[0].startswith("the ")
        elif made.intent == "count":
            kind = made.canonical.split("how many ")[1].split()[0]
            assert kind.rstrip("es").rstrip("s")[:4] in made.request.lower()
        elif made.intent == "presence":
            colour, kind = made.canonical.split("?")[0].split()[-2:]
            assert colour in made.request.lower() and kind in made.request.lower()
    assert set(seen) == set(INTENTS), seen  # every intent occurs


def test_heldout_templates_never_appear_in_training():
    used = {split: {(m.intent, m.template) for m, _ in draws(split)} for split in ("train", "heldout")}
    assert not used["train"] & used["heldout"]
    for intent, (_, phrasings) in INTENTS.items():
        train = {i for i, _ in templates(intent, "train")}
        heldout = {i for i, _ in templates(intent, "heldout")}
        assert heldout and train and not train & heldout and train | heldout == set(range(len(phrasings)))
        assert all(i % HELDOUT_EVERY == HELDOUT_EVERY - 1 for i in heldout)
        assert {(intent, i) for i in heldout} <= used["heldout"]  # the held-out wordings are all measured
    texts = {split: {m.request for m, _ in draws(split, 300)} for split in ("train", "heldout")}
    assert not texts["train"] & texts["heldout"]


def test_composed_wordings_share_no_four_word_run_with_a_heldout_template():
    heldout = heldout_templates()
    assert shared_runs("Please detect the {plurals} in <image>.", heldout) == [("detect", "the", "{plurals}", "in")]
    assert words("<image> Where's {Expr}, please?") == ["where's", "{expr}", "please"]
    for intent in INTENTS:
        wordings = composed(intent)
        assert len(wordings) >= 10, intent  # many more ways of asking than the fixed templates
        assert [i for i, _ in wordings] == list(range(len(INTENTS[intent][1]), len(INTENTS[intent][1]) + len(wordings)))
        for _, template in wordings:
            assert template.count("<image>") == 1 and not shared_runs(template, heldout), template
    used = Counter(m.template >= len(INTENTS[m.intent][1]) for m, _ in draws("train", 600))
    assert 0.4 < used[True] / sum(used.values()) < 0.6, used  # half of the training draws are composed
    assert all(m.template < len(INTENTS[m.intent][1]) for m, _ in draws("train", 300, composed_share=0.0))
    assert all(m.template >= len(INTENTS[m.intent][1]) for m, _ in draws("train", 300, composed_share=1.0))


def test_a_capitalised_slot_is_filled_capitalised():
    assert fill("<image> {Plurals}: where are they?", plurals="stars and hexagons") == \
        "<image> Stars and hexagons: where are they?"
    assert fill("Find {expr} in <image>.", expr="the red star") == "Find the red star in <image>."


def test_presence_questions_are_answered_yes_and_no_alike_under_every_wording():
    answers = defaultdict(Counter)
    for made, objects in draws("train", 3000) + draws("heldout", 1500, seed=1):
        if made.intent == "presence":
            colour, kind = made.canonical.split("?")[0].split()[-2:]
            assert made.answer == ("yes" if (kind, colour) in objects else "no")
            fixed = made.template < len(INTENTS["presence"][1])
            answers[made.template if fixed else "composed"][made.answer] += 1
    assert set(answers) == set(range(len(INTENTS["presence"][1]))) | {"composed"}
    for template, counts in answers.items():
        share = counts["yes"] / sum(counts.values())
        assert 0.3 < share < 0.7, (template, counts)


def test_named_kinds_are_present_and_absent_alike():
    present = Counter()
    for made, objects in draws("train", 1500):
        if made.intent == "detect" and 0 < len({k for k, _ in objects}) < len(CLASSES):
            for name in read_canonical(made.canonical).categories:
                present[name in {k for k, _ in objects}] += 1
    assert 0.35 < present[True] / sum(present.values()) < 0.65, present


def test_an_image_that_cannot_carry_a_request_gets_none():
    rng = np.random.default_rng(0)
    assert plain_request("ground", [("star", "red")], [], CLASSES, list(COLOURS), rng) is None
    assert plain_request("colour", [("star", "red"), ("star", "blue")], [], CLASSES, list(COLOURS), rng) is None
    with pytest.raises(ValueError):
        templates("detect", "val")


def test_dataset_over_shapes_files_and_its_pipeline(tiny_workspace):
    from mmengine.registry import DefaultScope

    from visionllm.datasets import PlainRequestDataset

    common = dict(data_root=f"{tiny_workspace}/data/shapes/", ann_file="annotations/instances_train.json",
                  refs_file="annotations/refs_train.json", data_prefix=dict(img_path="images/train/"),
                  requests_per_image=9, test_mode=True)
    pipeline = [dict(type="LoadImageRGB"), dict(type="LoadVisionLLMAnnotations"),
                dict(type="ResizeKeepRatio", scale=(96, 64)), dict(type="BuildInstruction", seed=0),
                dict(type="PackVisionLLMInputs")]
    with DefaultScope.overwrite_default_scope("visionllm"):
        train = PlainRequestDataset(split="train", pipeline=pipeline, **common)
    heldout = PlainRequestDataset(split="heldout", pipeline=[], **common)
    assert len(train) == len(heldout) == 12 * 9
    infos = [train.get_data_info(i) for i in range(len(train))]
    assert {info["intent"] for info in infos} == set(INTENTS)  # intents in turn: all of them per image
    assert not {(i["intent"], i["template"]) for i in infos} & \
        {(heldout.get_data_info(i)["intent"], heldout.get_data_info(i)["template"]) for i in range(len(heldout))}
    sample = train[0]["data_samples"]
    info = infos[0]
    assert sample.task == "request" and sample.target_text == info["target_text"]
    assert sample.instruction.startswith("<image> Rewrite this request as a task: ")
    assert read_instruction(sample.instruction).task == "request"
    with pytest.raises(ValueError):
        PlainRequestDataset(split="val", pipeline=[], **common)
    with pytest.raises(ValueError, match="composed_share"):
        PlainRequestDataset(split="train", pipeline=[], composed_share=1.5, **common)
