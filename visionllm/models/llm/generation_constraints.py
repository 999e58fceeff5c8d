"""Constraints on free-text generation (captions, answers) against degenerate repetition.

A small greedy decoder that has learnt list-like captions can fall into a loop ("a purple
triangle, a purple triangle, a purple triangle"). Two standard remedies, applied to the logits
of every generation step (Hugging Face ``LogitsProcessor`` protocol, so ``generate`` runs them
for greedy and beam search alike):

- ``NoRepeatNGram(n)``: a token that would complete an n-gram already present in the generated
  text gets probability zero (n-gram blocking, as in Paulus et al. 2017 for summarisation);
- ``RepetitionPenalty(p)``: the logit of every token generated before is divided by ``p`` when
  positive and multiplied by ``p`` when negative (Keskar et al. 2019, CTRL).

Only the generated tokens are seen: the prompt is fed as embeddings, so ``input_ids`` of each
step holds the generated ids alone.
"""
from typing import Optional

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class NoRepeatNGram(LogitsProcessor):
    """Forbids every token that would repeat an n-gram of the row's generated ids."""

    def __init__(self, size: int):
        if int(size) < 1:
            raise ValueError(f"no_repeat_ngram_size must be >= 1, got {size}")
        self.size = int(size)

    def banned(self, ids: list) -> set:
        """Tokens that would complete an n-gram already in ``ids`` (a list of ints)."""
        n = self.size
        if len(ids) < n - 1:
            return set()
        prefix = ids[len(ids) - n + 1:] if n > 1 else []
        return {ids[k + n - 1] for k in range(len(ids) - n + 1) if ids[k:k + n - 1] == prefix}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        for row, ids in enumerate(input_ids.tolist()):
            banned = sorted(self.banned(ids))
            if banned:
                scores[row, banned] = float("-inf")
        return scores


class RepetitionPenalty(LogitsProcessor):
    """Makes every token already generated in the row less likely by the factor ``penalty``."""

    def __init__(self, penalty: float):
        if float(penalty) <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
        self.penalty = float(penalty)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] == 0:
            return scores
        seen = torch.gather(scores, 1, input_ids)
        seen = torch.where(seen > 0, seen / self.penalty, seen * self.penalty)
        return scores.scatter(1, input_ids, seen)


def build_text_constraints(config: Optional[dict]) -> Optional[LogitsProcessorList]:
    """The processors of ``dict(no_repeat_ngram_size=n, repetition_penalty=p)`` (0 / 1.0 or a
    missing key: off), or None when nothing is constrained."""
    config = dict(config or {})
    unknown = set(config) - {"no_repeat_ngram_size", "repetition_penalty"}
    if unknown:
        raise KeyError(f"unknown text constraint(s) {sorted(unknown)}; "
                       "known: no_repeat_ngram_size, repetition_penalty")
    processors = LogitsProcessorList()
    if config.get("repetition_penalty") not in (None, 1, 1.0):
        processors.append(RepetitionPenalty(config["repetition_penalty"]))
    if config.get("no_repeat_ngram_size"):
        processors.append(NoRepeatNGram(config["no_repeat_ngram_size"]))
    return processors or None
