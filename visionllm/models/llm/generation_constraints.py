"""Constraints on free-text generation (captions, answers) against degenerate repetition.

A small greedy decoder that has learnt list-like captions can fall into a loop ("a purple
triangle, a purple triangle, a purple triangle"). Two standard remedies, applied to the logits
of every generation step (Hugging Face ``LogitsProcessor`` protocol, so ``generate`` runs them
for greedy and beam search alike):

- ``NoRepeatNGram(n)``: a token that would complete an n-gram already present in the generated
  text gets probability zero (n-gram blocking, as in Paulus et al. 2017 for summarisation);
- ``RepetitionPenalty(p)``: the logit of every token generated before is divided by ``p`` when
  positive and multiplied by ``p`` when negative (Keskar et al. 2019, CTRL).

A third constraint is not about repetition: ``AllowedTokens`` keeps a row's generation inside a
vocabulary. The canonical form of a plain request (``visionllm.tasks.request``) copies its
categories, expression or question from the request's own words, so its vocabulary is those
words plus the few the canonical forms add (``canonical_vocabulary``): a name the user did not
say cannot be written.

``BannedWords`` is its opposite: a row may not write given words (each spelled as one or more
tokens). A caption grounded in the model's own detections (``visionllm.models.caption_grounding``)
may not name a kind of object that the detector did not find in the image.

Only the generated tokens are seen: the prompt is fed as embeddings, so ``input_ids`` of each
step holds the generated ids alone.
"""
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from transformers import LogitsProcessor, LogitsProcessorList


def _forbid_per_row(scores: torch.FloatTensor, input_ids: torch.LongTensor,
                    forbidden: Callable[[int, List[int]], set]) -> torch.FloatTensor:
    """A copy of ``scores`` in which row ``r`` gives -inf to the tokens ``forbidden(r, ids)``,
    ``ids`` being the row's generated ids."""
    scores = scores.clone()
    for row, generated in enumerate(input_ids.tolist()):
        tokens = sorted(forbidden(row, generated))
        if tokens:
            scores[row, tokens] = float("-inf")
    return scores


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
        return _forbid_per_row(scores, input_ids, lambda row, ids: self.banned(ids))


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


class AllowedTokens(LogitsProcessor):
    """Row ``r`` may generate only the token ids ``allowed[r]``: a list of ids, or a function of
    the row's generated ids giving that list (a vocabulary that depends on what was written so
    far); a row whose entry is None is free. Beam search: each row's beams in one block."""

    def __init__(self, allowed: Sequence[Union[None, Sequence[int], Callable[[List[int]], Sequence[int]]]]):
        self.allowed = list(allowed)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        beams = scores.shape[0] // len(self.allowed)
        mask = torch.zeros_like(scores)
        for index, generated in enumerate(input_ids.tolist()):
            allowed = self.allowed[index // beams]
            if allowed is None:
                continue
            ids = sorted(set(allowed(generated) if callable(allowed) else allowed))
            if not ids:
                raise ValueError("a constrained row has no allowed token")
            mask[index].fill_(float("-inf"))
            mask[index, ids] = 0.0
        return scores + mask


class Spelling(NamedTuple):
    """One way a tokenizer writes a word: its ``ids``; ``at_start``: the spelling of the start
    of a text (the word with no space before it), which occurs only there; ``open_start``: the
    first token is a word of its own ("hot" of "hot dog"), not a fragment ("hex" of "hexagon")."""
    ids: Tuple[int, ...]
    at_start: bool
    open_start: bool


class BannedWords(LogitsProcessor):
    """Row ``r`` may not write the words spelled ``banned[r]`` (``Spelling`` s; None or empty:
    free).

    A spelling's last token is forbidden where the row ends with the rest of it (a one-token
    word is never written). Its first token, when a fragment of the word, is forbidden where the
    spelling could begin: a multi-token word is then not even started (a first token that is a
    word of its own, "hot" of "hot dog", stays allowed). Spellings ``at_start`` apply at the
    start of the text only. Beam search: each row's beams in one block.
    """

    def __init__(self, banned: Sequence[Optional[Sequence[Spelling]]]):
        self.banned = [[Spelling(*spelling) for spelling in (row or ()) if len(spelling[0])] for row in banned]

    def forbidden(self, row: int, generated: List[int]) -> set:
        """The tokens row ``row`` may not write next, after ``generated``."""
        out = set()
        for ids, at_start, open_start in self.banned[row]:
            if at_start and len(generated) >= len(ids):
                continue  # past the only place this spelling occurs
            if not open_start and (not at_start or not generated):
                out.add(ids[0])
            head = list(ids[:-1])
            written = generated[len(generated) - len(head):] if head else []
            if written == head and (not at_start or len(generated) == len(head)):
                out.add(ids[-1])
        return out

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        beams = scores.shape[0] // len(self.banned)
        return _forbid_per_row(scores, input_ids, lambda index, generated: self.forbidden(index // beams, generated))


def word_spellings(tokenizer, words: Sequence[str]) -> List[Spelling]:
    """The ``Spelling`` s of ``words``: each tokenised alone (the start of a text) and after a
    space."""
    spellings = set()
    for word in words:
        for text in (word, " " + word):
            ids = tuple(tokenizer.encode(text, add_special_tokens=False))
            if ids:
                first = tokenizer.decode(ids[:1]).strip()
                spellings.add(Spelling(ids, text == word, len(ids) == 1 or first == word.split()[0]))
    return sorted(spellings)


def word_token_ids(tokenizer, words: Sequence[str]) -> List[int]:
    """Every token id of ``words``, each tokenised alone and after a space (BPE vocabularies
    spell a word differently at the start of a text and after a space)."""
    return sorted({token for spelling in word_spellings(tokenizer, words) for token in spelling.ids})


TEXT_CONSTRAINT_KEYS = ("no_repeat_ngram_size", "repetition_penalty", "request_words", "request_categories")


def build_text_constraints(config: Optional[dict]) -> Optional[LogitsProcessorList]:
    """The processors of ``dict(no_repeat_ngram_size=n, repetition_penalty=p)`` (0 / 1.0 or a
    missing key: off), or None when nothing is constrained. ``request_words`` and
    ``request_categories`` (see ``LanguageModelDecoder``) depend on each row's instruction and
    are applied per call, not here."""
    config = dict(config or {})
    unknown = set(config) - set(TEXT_CONSTRAINT_KEYS)
    if unknown:
        raise KeyError(f"unknown text constraint(s) {sorted(unknown)}; known: {', '.join(TEXT_CONSTRAINT_KEYS)}")
    processors = LogitsProcessorList()
    if config.get("repetition_penalty") not in (None, 1, 1.0):
        processors.append(RepetitionPenalty(config["repetition_penalty"]))
    if config.get("no_repeat_ngram_size"):
        processors.append(NoRepeatNGram(config["no_repeat_ngram_size"]))
    return processors or None
