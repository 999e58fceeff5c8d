"""Training with the earlier turns in the prompt: answers that only the history can give."""

import pytest
import torch
from fresh_seed import fresh_seed
from tiny_llm import build_decoder, fit_decoder, make_sample

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]

LORA = dict(rank=16, alpha=32, dropout=0.0, include_mlp=True)
STEPS = 500
FITTED = 1e-3  # text loss at which training stops (most starts reach it in 100-150 steps)
QUESTION = "Repeat the code word."


def code_word_samples(words):
    """Turn 2 asks for a word said in turn 1, by the user (first half) or by the assistant."""
    samples = []
    for i, word in enumerate(words):
        if i % 2 == 0:
            turn = dict(user=f"<image> Remember the code word {word}.", assistant="Done.")
        else:
            turn = dict(user="<image> Say a code word.", assistant=word)
        sample = make_sample("vqa", QUESTION, target_text=word)
        sample.set_metainfo(dict(history=[turn]))
        samples.append(sample)
    return samples


def _overfit(decoder_dir, samples, seed):
    """Train a fresh LoRA decoder on ``samples`` (one random image for all) until its loss is
    ``FITTED`` or for ``STEPS`` steps, and return what it answers and its last loss."""
    g = torch.Generator().manual_seed(seed)
    decoder = build_decoder(decoder_dir, lora=LORA, num_slots=2)
    # One image for all: without the history every prompt is the same, so no model could answer.
    embeds = torch.randn(1, 4, decoder.hidden_size, generator=g).expand(len(samples), -1, -1).contiguous()
    assert len({tuple(decoder.prompt.encode("<image> " + s.instruction)[1]) for s in samples}) == 1
    losses = fit_decoder(decoder, embeds, torch.rand(len(samples), 4, 2, generator=g), samples, steps=STEPS, lr=2e-3,
                         stop_below=FITTED)
    predicted = decoder.predict(embeds, torch.rand(len(samples), 4, 2), samples)
    return [s.pred_text for s in predicted], losses["loss_text"]


def test_second_turn_answers_come_from_the_first_turn(tiny_llama_dir):
    """Whether a model CAN answer from the history. Gradient descent on this tiny random LLM
    sometimes settles with two words of one kind of turn confused (about 1 start in 10: 3 of 24
    seeds, loss plateau 0.156), so up to three starts (different images and sampling) are
    allowed. A history that does not reach the LLM makes every start fail: two prompts would be
    identical with different answers."""
    seed = fresh_seed()
    words = ["apple", "river", "tiger", "cloud"]
    samples = code_word_samples(words)
    attempts = []
    for start in range(3):
        answers, loss = _overfit(tiny_llama_dir, samples, seed + start)
        attempts.append((seed + start, answers, round(loss, 4)))
        if answers == words:
            return
    pytest.fail(f"no start answered {words}: (seed, answers, last loss) {attempts}")
