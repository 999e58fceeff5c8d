"""The LLM learns to write the canonical forms of a few mixed plain requests exactly."""

import pytest
import torch
from fresh_seed import seed_and_generator
from tiny_llm import build_decoder, fit_decoder, make_sample

from visionllm.tasks import read_canonical, wrap_request

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]

LORA = dict(rank=8, alpha=16, dropout=0.0, include_mlp=True)
REQUESTS = [  # (request, canonical form, task)
    ("Find all stars and hexagons in <image>.", "detection: star; hexagon", "detection"),
    ("Please locate the red square in <image>.", "grounding: the red square", "grounding"),
    ("How many triangles are in <image>?", "vqa: how many triangles are there?", "vqa"),
    ("<image> Is there a blue star?", "vqa: is there a blue star?", "vqa"),
    ("<image> Outline every circle.", "segmentation: circle", "segmentation"),
    ("<image> Describe this picture.", "caption", "caption"),
    ("<image> Translate this into French.", "unsupported", None),
]


def test_canonical_forms_of_mixed_requests_are_learnt_exactly(tiny_llama_dir):
    seed, g = seed_and_generator()
    samples = [make_sample("request", wrap_request(text), target_text=canonical) for text, canonical, _ in REQUESTS]
    decoder = build_decoder(tiny_llama_dir, lora=LORA, num_slots=2, max_new_tokens=16)
    # One image for all: the request's words alone decide the canonical form.
    embeds = torch.randn(1, 4, decoder.hidden_size, generator=g).expand(len(samples), -1, -1).contiguous()
    refs = torch.rand(len(samples), 4, 2, generator=g)
    losses = fit_decoder(decoder, embeds, refs, samples, steps=300)
    predicted = [s.pred_text for s in decoder.predict(embeds, refs, samples)]
    assert predicted == [canonical for _, canonical, _ in REQUESTS], f"seed {seed}: loss {losses['loss_text']:.4f}"
    for text, (_, _, task) in zip(predicted, REQUESTS):
        expanded = read_canonical(text)
        assert (expanded.task if expanded is not None else None) == task
