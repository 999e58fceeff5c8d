"""Prompt assembly: the LLM's own chat template with ``<image>`` replaced by image-token embeddings.

A conversation is rendered in the LLaVA-Instruct layout: the earlier (user, assistant) turns in
order, then the current user turn; ``<image>`` stands exactly once, in the user turn that first
showed the image, so the image tokens enter the prompt once.

Batches are LEFT padded: every sequence ends at the same index, so the response / slot groups
appended after the prompt line up across the batch, and generation continues all rows at once.
Position ids count only real tokens (``cumsum(valid) - 1``), so padding never shifts positions.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from ...instructions import IMAGE_PLACEHOLDER
from ...instructions.regions import REGION_PLACEHOLDER, split_placeholders
from ...instructions.words import word_spans

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that "
                   "appropriately completes the request.\n\n")
ALPACA_TURN = "### Instruction:\n{instruction}\n\n### Response:\n"

# One earlier turn of a conversation: {"user": text, "assistant": text}.
Turn = Dict[str, str]


def check_turns(instruction: str, history: Optional[Sequence[Turn]] = None) -> List[Turn]:
    """The history as a list of turns, after checking that ``<image>`` appears exactly once over
    the user turns: in the first user turn that has it, so never in a later one, nor in an
    assistant answer; and that no earlier turn holds a ``<region>`` (regions come with the
    current instruction only: write an earlier one out, e.g. as its box). Raises ``ValueError``
    with a one-line message otherwise."""
    turns = list(history or [])
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("user"), str) \
                or not isinstance(turn.get("assistant"), str):
            raise ValueError(f"history turn {i} must be a dict with str 'user' and 'assistant', got {turn!r}")
        if IMAGE_PLACEHOLDER in turn["assistant"]:
            raise ValueError(f"the assistant answer of history turn {i} contains {IMAGE_PLACEHOLDER}")
        if REGION_PLACEHOLDER in turn["user"] or REGION_PLACEHOLDER in turn["assistant"]:
            raise ValueError(f"history turn {i} contains {REGION_PLACEHOLDER}: regions come with the current "
                             f"instruction only (write an earlier region out, e.g. as its box)")
    users = [turn["user"] for turn in turns] + [instruction]
    counts = [text.count(IMAGE_PLACEHOLDER) for text in users]
    if sum(counts) != 1:
        where = "the instruction" if not turns else "the user turns of the conversation"
        raise ValueError(f"{where} must contain exactly one {IMAGE_PLACEHOLDER} (found {sum(counts)}); "
                         f"in a conversation it stands in the first turn only")
    return turns


class PromptBuilder:
    """Token ids of the prompt around ``<image>``.

    Args:
        tokenizer: a HF tokenizer.
        style: ``'chat'`` (the tokenizer's own chat template, e.g. SmolLM2's ChatML) or
            ``'alpaca'`` ("### Instruction: / ### Response:").
        system_prompt: optional system message for chat templates.
    """

    def __init__(self, tokenizer, style: str = "chat", system_prompt: Optional[str] = None):
        if style not in ("chat", "alpaca"):
            raise ValueError(f"unknown prompt style {style!r}; expected 'chat' or 'alpaca'")
        if style == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat template; use 'alpaca'")
        self.tokenizer = tokenizer
        self.style = style
        self.system_prompt = system_prompt

    def render(self, instruction: str, history: Optional[Sequence[Turn]] = None) -> str:
        """The prompt text: the earlier turns of ``history`` (oldest first), then ``instruction``
        as the user turn to answer, ending where the response starts."""
        turns = list(history or [])
        if self.style == "alpaca":
            # Vicuna / LLaVA-v1 keep each earlier answer closed by the end-of-sequence token, as
            # the model's own answers end in training; the preamble is said once.
            eos = self.tokenizer.eos_token or ""
            past = "".join(ALPACA_TURN.format(instruction=t["user"]) + t["assistant"] + eos + "\n\n"
                           for t in turns)
            return (self.tokenizer.bos_token or "") + ALPACA_PREAMBLE + past + ALPACA_TURN.format(
                instruction=instruction)
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        for turn in turns:
            messages += [{"role": "user", "content": turn["user"]}, {"role": "assistant", "content": turn["assistant"]}]
        messages.append({"role": "user", "content": instruction})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, instruction: str, history: Optional[Sequence[Turn]] = None) -> Tuple[List[int], List[int]]:
        """Return (ids before ``<image>``, ids after ``<image>``) of the rendered prompt; with a
        ``history`` the image stands in the user turn that has it (``check_turns``)."""
        turns = check_turns(instruction, history)
        before, after = self.render(instruction, turns).split(IMAGE_PLACEHOLDER)
        return self.text_ids(before), self.text_ids(after)

    def encode_pieces(self, instruction: str, history: Optional[Sequence[Turn]] = None
                      ) -> List[Union[List[int], str]]:
        """The rendered prompt (after ``history``'s turns, ``check_turns``) cut at ``<image>`` and
        every ``<region>``: token ids of each text piece, with the placeholders in between as the
        strings ``'<image>'`` / ``'<region>'``."""
        turns = check_turns(instruction, history)
        return [piece if piece in (IMAGE_PLACEHOLDER, REGION_PLACEHOLDER) else self.text_ids(piece)
                for piece in split_placeholders(self.render(instruction, turns))]

    def encode_pieces_with_words(self, instruction: str, history: Optional[Sequence[Turn]] = None
                                 ) -> Tuple[list, Optional[List[Optional[List[int]]]]]:
        """:meth:`encode_pieces` and, per piece, for a text piece per token the index of the word
        of ``instruction`` (``word_spans``) the token overlaps, -1 for the template's and earlier
        turns' tokens; None for a placeholder. The word lists are None when the rendered prompt
        does not hold the instruction verbatim (a template that rewrites it) or the tokenizer
        gives no offsets."""
        text = self.render(instruction, check_turns(instruction, history))
        start = text.rfind(instruction)
        if start < 0 or not getattr(self.tokenizer, "is_fast", False):
            return self.encode_pieces(instruction, history), None
        spans = [(start + a, start + b) for a, b in word_spans(instruction)]
        pieces, words, offset = [], [], 0
        for piece in split_placeholders(text):
            if piece in (IMAGE_PLACEHOLDER, REGION_PLACEHOLDER):
                pieces.append(piece)
                words.append(None)
            else:
                tokens = self.tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True) if piece \
                    else dict(input_ids=[], offset_mapping=[])
                pieces.append(tokens["input_ids"])
                words.append([next((k for k, (u, v) in enumerate(spans) if offset + a < v and u < offset + b), -1)
                              for a, b in tokens["offset_mapping"]])
            offset += len(piece)
        return pieces, words

    def text_ids(self, text: str) -> List[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    @property
    def end_of_response_id(self) -> int:
        return self.tokenizer.eos_token_id


@dataclass
class TokensPlusVector:
    """Token ids whose embeddings get ``vector [C]`` added (a region: its location tokens plus
    what the image holds there). Never a target."""
    ids: Sequence[int]
    vector: torch.Tensor


# A segment of a sequence: token ids (embedded by the LLM's embedding), ready embeddings, or
# token ids with a vector added to their embeddings.
Segment = Union[Sequence[int], torch.Tensor, TokensPlusVector]


@dataclass
class SequenceBatch:
    """Left-padded batch of input embeddings.

    embeds: ``[B, L, C]``; valid: ``[B, L]`` bool (False = padding); labels: ``[B, L]`` next-token
    targets aligned with the *input* position that predicts them (-100 = no loss); input_ids:
    ``[B, L]`` the token id at each position (-1 for embedding segments and padding), or None.
    """
    embeds: torch.Tensor
    valid: torch.Tensor
    labels: torch.Tensor
    input_ids: Optional[torch.Tensor] = None

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.valid.long().cumsum(dim=1) - 1).clamp(min=0)

    @property
    def lengths(self) -> torch.Tensor:
        return self.valid.sum(dim=1)


def assemble_batch(samples: List[List[Tuple[Segment, bool]]], embed_tokens,
                   hidden_size: int, device=None, dtype=torch.float32) -> SequenceBatch:
    """Concatenate each sample's segments and left-pad the batch.

    Each segment is ``(ids_or_embeds, is_target)``; token segments with ``is_target`` become LM
    targets (each token predicted from the position before it). Embedding segments are never
    targets.
    """
    rows = []
    for segments in samples:
        pieces, targets, input_ids = [], [], []
        for segment, is_target in segments:
            if isinstance(segment, TokensPlusVector):
                ids = torch.as_tensor(list(segment.ids), dtype=torch.long, device=device)
                pieces.append(embed_tokens(ids).to(dtype) + segment.vector.to(device=ids.device, dtype=dtype))
                targets.append(torch.full((len(ids),), -100, dtype=torch.long))
                input_ids.append(ids.cpu())
            elif isinstance(segment, torch.Tensor) and segment.is_floating_point():
                pieces.append(segment.to(dtype))
                targets.append(torch.full((segment.shape[0],), -100, dtype=torch.long))
                input_ids.append(torch.full((segment.shape[0],), -1, dtype=torch.long))
            else:
                ids = torch.as_tensor(list(segment), dtype=torch.long, device=device)
                pieces.append(embed_tokens(ids).to(dtype) if len(ids) else
                              torch.zeros(0, hidden_size, dtype=dtype, device=device))
                targets.append(ids.cpu() if is_target else torch.full((len(ids),), -100, dtype=torch.long))
                input_ids.append(ids.cpu())
        embeds = torch.cat([p.to(device) if device is not None else p for p in pieces], dim=0)
        target_ids = torch.cat(targets)
        # labels[t] = the token that input position t must predict = target of position t+1.
        labels = torch.full_like(target_ids, -100)
        labels[:-1] = target_ids[1:]
        rows.append((embeds, labels, torch.cat(input_ids)))
    length = max(row[0].shape[0] for row in rows)
    device = rows[0][0].device
    batch = len(rows)
    embeds = torch.zeros(batch, length, hidden_size, dtype=dtype, device=device)
    valid = torch.zeros(batch, length, dtype=torch.bool, device=device)
    labels = torch.full((batch, length), -100, dtype=torch.long, device=device)
    token_ids = torch.full((batch, length), -1, dtype=torch.long, device=device)
    for i, (e, lab, ids) in enumerate(rows):
        n = e.shape[0]
        embeds[i, length - n:] = e
        valid[i, length - n:] = True
        labels[i, length - n:] = lab.to(device)
        token_ids[i, length - n:] = ids.to(device)
    return SequenceBatch(embeds, valid, labels, token_ids)
