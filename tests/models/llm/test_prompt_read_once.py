"""Structured inference reading each prompt once (``reuse_prompt_cache``) against the old path
(the format generated in its own pass, then prompt, format and slot groups read again): the same
predictions whether the instruction's stated format (the draft) is what the model generates,
longer, shorter, or absent."""
import pytest
import torch
from tiny_llm import build_decoder, make_sample

from visionllm.instructions import format_category_set

NAMES = ["cat", "dog", "cow"]
SCALE = (0.5, 0.8)


def polygon_instruction(num_points: int) -> str:
    return f"Segment {format_category_set(NAMES)} in <image> as (c, x1, y1, ..., x{num_points}, y{num_points})."


INSTRUCTIONS = [
    f"Detect {format_category_set(NAMES)} in <image>. Answer as (c, x1, y1, x2, y2).",
    polygon_instruction(3),
    polygon_instruction(4),
    polygon_instruction(8),
    polygon_instruction(16),
    f"Segment {format_category_set(NAMES)} in <image>.",  # states no format: nothing to draft
]


@pytest.fixture(scope="module")
def decoder(tiny_llama_dir):
    """A tiny random decoder whose greedy format is 4 points for these prompts (random rows of the
    new tokens decide it), so the drafts above are shorter, equal, longer, or missing."""
    decoder = build_decoder(tiny_llama_dir, num_slots=4, max_classes_per_pass=2, generate_format=True).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        decoder.head.new_weight.normal_(0, 3.0, generator=generator)
        decoder.class_pointer.key.weight.normal_(0, 0.1, generator=generator)
    return decoder


def samples_of(instructions):
    return [make_sample("segmentation", text, categories=NAMES, scale_factor=SCALE) for text in instructions]


def predict(decoder, reuse: bool, embeds, refs, samples):
    """Predictions and the number of LLM forward passes."""
    calls = []
    hook = decoder.backbone.register_forward_pre_hook(lambda *args: calls.append(1))
    decoder.reuse_prompt_cache = reuse
    try:
        outputs = [s.pred_instances for s in decoder.predict(embeds, refs, [s.clone() for s in samples])]
    finally:
        hook.remove()
        decoder.reuse_prompt_cache = True
    return outputs, len(calls)


def assert_same_predictions(old, new):
    for before, after in zip(old, new):
        assert set(before.keys()) == set(after.keys())
        assert torch.equal(before.labels, after.labels)
        assert torch.allclose(before.scores, after.scores, atol=1e-5)
        assert before.bboxes.shape == after.bboxes.shape
        assert torch.allclose(before.bboxes, after.bboxes, atol=1e-3)
        if "polygons" in before:
            # a wrongly accepted draft would show here as another number of points
            assert before.polygons.shape == after.polygons.shape
            assert torch.allclose(before.polygons, after.polygons, atol=1e-3)


def test_reading_the_prompt_once_gives_the_old_predictions_for_right_wrong_and_missing_drafts(decoder):
    generator = torch.Generator().manual_seed(1)
    instructions = INSTRUCTIONS * 2
    embeds, refs = torch.randn(len(instructions), 4, 64, generator=generator), torch.rand(len(instructions), 4, 2,
                                                                                        generator=generator)
    # What greedy generation emits against what each instruction states (the cases covered).
    with torch.no_grad():
        generated = decoder._generate_format(embeds, instructions)
    cases = set()
    for text, tokens in zip(instructions, generated):
        draft = decoder._format_draft(text)
        assert tokens is not None
        cases.add("none" if draft is None else "equal" if draft == tokens else
                  "longer" if len(draft) > len(tokens) else "shorter")
    assert cases == {"none", "equal", "longer", "shorter"}
    old, _ = predict(decoder, False, embeds, refs, samples_of(instructions))
    new, _ = predict(decoder, True, embeds, refs, samples_of(instructions))
    assert_same_predictions(old, new)


def test_a_draft_that_generation_confirms_costs_one_llm_pass(decoder):
    generator = torch.Generator().manual_seed(2)
    instructions = [polygon_instruction(4)] * 3  # the format this decoder generates
    embeds, refs = torch.randn(3, 4, 64, generator=generator), torch.rand(3, 4, 2, generator=generator)
    samples = [make_sample("detection", text, categories=NAMES[:2], scale_factor=SCALE) for text in instructions]
    old, old_calls = predict(decoder, False, embeds, refs, samples)
    new, new_calls = predict(decoder, True, embeds, refs, samples)
    assert_same_predictions(old, new)
    assert (old_calls, new_calls) == (2, 1)  # format pass + slot pass, against one pass


def test_the_draft_is_verified_at_every_stop_position(decoder):
    """``_format_stops`` on the hidden states after a draft's tokens reads the same stop as on the
    whole longest format, for drafts ending before, at and after the generated format."""
    generator = torch.Generator().manual_seed(3)
    embeds = torch.randn(2, 4, 64, generator=generator)
    texts = [INSTRUCTIONS[0], INSTRUCTIONS[2]]
    longest = decoder._longest_format_ids()
    with torch.no_grad():
        generated = decoder._generate_format(embeds, texts)
        for length in (5, 7, 9, 11, 33):
            groups = decoder._group_embeds(embeds, ("cls",) + tuple(f"{a}{i}" for i in range(1, length // 2 + 1)
                                                                   for a in "xy"))
            stops, *_ = decoder._drafted_pass(embeds, texts, longest[:length], groups)
            for row, tokens in enumerate(generated):
                expected = len(tokens) - 1 if len(tokens) <= length else -1
                assert int(stops[row]) == expected
