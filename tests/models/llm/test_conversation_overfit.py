"""Training with the earlier turns in the prompt: answers that only the history can give."""
import os

import pytest
import torch
from tiny_llm import build_decoder, make_sample

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]

LORA = dict(rank=8, alpha=16, dropout=0.0, include_mlp=True)
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


def test_second_turn_answers_come_from_the_first_turn(tiny_llama_dir):
    seed = int(os.environ.get("VISIONLLM_TEST_SEED", torch.seed() % 2**31))
    g = torch.Generator().manual_seed(seed)
    words = ["apple", "river", "tiger", "cloud"]
    samples = code_word_samples(words)
    decoder = build_decoder(tiny_llama_dir, lora=LORA, num_slots=2)
    # One image for all: without the history every prompt is the same, so no model could answer.
    embeds = torch.randn(1, 4, decoder.hidden_size, generator=g).expand(len(samples), -1, -1).contiguous()
    assert len({tuple(decoder.prompt.encode("<image> " + s.instruction)[1]) for s in samples}) == 1
    params = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.0)
    # 250 steps left seeds 99 and 11 on a plateau (loss 0.156: the two words said by the
    # assistant confused); 400 fit all of the 6 seeds tried.
    steps = 400
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    decoder.train()
    for _ in range(steps):
        loss = decoder.loss(embeds, torch.rand(len(samples), 4, 2, generator=g), samples)["loss_text"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
    decoder.eval()
    predicted = decoder.predict(embeds, torch.rand(len(samples), 4, 2), samples)
    assert [s.pred_text for s in predicted] == words, f"seed {seed}: loss {loss.item():.4f}"
