"""Which LLM passes structured inference runs, and over which rows.

Category sets beyond the class-token budget are split into several passes; instructions that
state their format are read in one drafted pass with their slot groups; the rest generate their
format first and continue its cache (see ``LLMTaskDecoder``). ``StructuredPasses`` is a mixin of
the task decoder: it uses the decoder's prompt assembly, format generation and slot queries.
"""
from functools import partial
from typing import Dict, Iterator, List, NamedTuple, Sequence, Tuple

import torch

from .language_model import PromptCache, sample_meta
from .parallel_decoding import cached_parallel_forward, worth_pruning
from .prompt import SequenceBatch


class SlotPass(NamedTuple):
    """One slot pass: instructions ``members`` (row ``rows[j]`` of the tensors holds
    ``members[j]``) sharing the output format ``fields``."""
    members: List[int]
    fields: Tuple[str, ...]
    prefix: SequenceBatch
    prefix_hidden: torch.Tensor
    group_hidden: torch.Tensor
    rows: List[int]


def _grouped(keys: Sequence) -> Dict:
    """Indices of equal keys, keyed in order of first appearance."""
    groups: Dict = {}
    for index, key in enumerate(keys):
        groups.setdefault(tuple(key) if key is not None else None, []).append(index)
    return groups


class StructuredPasses:
    """The pass planning of ``LLMTaskDecoder`` (a mixin)."""

    def _category_passes(self, samples) -> List[Tuple[int, str, List[str], int]]:
        """``(sample index, instruction, names, offset)`` per pass: category sets beyond the
        budget run in several passes, each with a part of the set."""
        from visionllm.instructions import format_category_set, split_category_set
        passes = []
        for i, sample in enumerate(samples):
            instruction, categories = sample_meta(sample, "instruction"), list(sample_meta(sample, "categories"))
            if len(categories) <= self.max_classes_per_pass:
                passes.append((i, instruction, categories, 0))
                continue
            full = format_category_set(categories)
            if full not in instruction:
                raise ValueError("a category set beyond the class-token budget must appear in the "
                                 "instruction as format_category_set(categories) to be split")
            offset = 0
            for chunk in split_category_set(categories, self.max_classes_per_pass):
                passes.append((i, instruction.replace(full, format_category_set(chunk)), chunk, offset))
                offset += len(chunk)
        return passes

    def _cached_groups(self, prompt: PromptCache, rows: List[int], image_embeds: torch.Tensor,
                       fields: Sequence[str]) -> Tuple[SequenceBatch, torch.Tensor, torch.Tensor]:
        """The slot pass of some rows of ``prompt`` continuing its cache: reads the rest of
        ``format + end of response`` and the slot groups. Returns (prefix, prefix hidden, group hidden)."""
        cache, kept, rest = prompt.continuation(rows, self._format_ids(fields) + [self.prompt.end_of_response_id])
        groups = self._group_embeds(image_embeds, fields)
        rest_embeds = self.embed_tokens(torch.tensor(rest, dtype=torch.long, device=groups.device)).to(groups.dtype)
        with self._reading(image_embeds):
            group_hidden = cached_parallel_forward(self.backbone, kept, cache, rest_embeds.expand(len(rows), -1, -1),
                                                   groups)
        return kept, prompt.hidden[rows, :kept.embeds.shape[1]], group_hidden

    def _slot_passes(self, embeds: torch.Tensor, instructions: List[str],
                     contexts: List[dict], keep=None) -> Iterator[SlotPass]:
        """The slot pass of every instruction (``contexts``: each one's ``_prompt_context``),
        grouped by output format.

        Reading the prompt once (``reuse_prompt_cache``): instructions that state a format are
        read with it as a draft, end of response and the slot groups in one pass
        (``_drafted_pass``); a row whose generated format is shorter than the draft continues
        that pass's cache with its own format; rows whose generation goes past the draft, or that
        state no format, generate it (``_decode_format``) and continue that pass's cache. The
        reference reads the prompt twice: the format pass, then prompt + format + groups.
        ``keep(members, prefix, prefix_hidden, first_hidden)``: the groups a drafted pass
        finishes (see ``pruned_parallel_forward``).
        """
        if not (self.reuse_prompt_cache and self.generate_format and self.decode_mode == "parallel"):
            formats = self._decode_format(embeds, instructions, contexts=contexts)
            for fields, members in _grouped(formats).items():
                prefix = self._structured_prefix(embeds[members], [instructions[k] for k in members], fields,
                                                 [contexts[k] for k in members])
                with self._reading(embeds[members]):
                    prefix_hidden, group_hidden = self._run_groups(
                        prefix, self._group_embeds(embeds[members], fields), self.decode_mode)
                yield SlotPass(members, fields, prefix, prefix_hidden, group_hidden, list(range(len(members))))
            return
        drafts = [self._format_draft(text) for text in instructions]
        undecided = [k for k, draft in enumerate(drafts) if draft is None]
        for draft, members in _grouped([tuple(d) if d is not None else None for d in drafts]).items():
            if draft is None:
                continue
            fields = tuple(self.id_to_field[i] for i in draft)
            group_embeds = self._group_embeds(embeds[members], fields)
            prune = keep is not None and worth_pruning(group_embeds.shape[1], len(fields))
            stops, prefix, prefix_hidden, group_hidden, prompt = self._drafted_pass(
                embeds[members], [instructions[k] for k in members], list(draft), group_embeds,
                [contexts[k] for k in members], keep=partial(keep, members) if prune else None)
            ends = {}  # format length where generation stops (the draft's or shorter) -> rows
            for row, stop in enumerate(stops.tolist()):
                if stop == len(draft) - 1:
                    ends.setdefault(len(draft), []).append(row)
                elif stop >= 0:
                    ends.setdefault(stop + 1, []).append(row)
                else:
                    undecided.append(members[row])
            for length, rows in ends.items():
                if length == len(draft):
                    yield SlotPass([members[r] for r in rows], fields, prefix, prefix_hidden, group_hidden, rows)
                    continue
                short = fields[:length]
                own = [members[r] for r in rows]
                yield SlotPass(own, short, *self._cached_groups(prompt, rows, embeds[own], short),
                               list(range(len(rows))))
        if undecided:
            state = {}
            formats = self._decode_format(embeds[undecided], [instructions[k] for k in undecided], state,
                                          [contexts[k] for k in undecided])
            for fields, rows in _grouped(formats).items():
                own = [undecided[r] for r in rows]
                yield SlotPass(own, fields, *self._cached_groups(state["cache"], rows, embeds[own], fields),
                               list(range(len(rows))))
