"""The LLM side of the task decoder: loading, LoRA, the extended vocabulary, prompt assembly and
hidden states.

``LanguageModelDecoder`` knows nothing about boxes or polygons: it turns (instruction, image
tokens, extra token ids) into hidden states, language-model losses, generated text and generated
output formats. ``LLMTaskDecoder`` builds the structured head on top of it.
"""
import copy
from collections import OrderedDict
from contextlib import nullcontext
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import nn
from transformers import LogitsProcessorList

from visionllm.instructions import IMAGE_PLACEHOLDER
from visionllm.instructions.regions import REGION_PLACEHOLDER, count_regions, region_bins, regions_of
from visionllm.tasks import canonical_vocabulary, category_tasks, request_in
from visionllm.tasks.request import CATEGORY_SEPARATOR

from .generation_constraints import AllowedTokens, BannedWords, build_text_constraints, word_spellings, word_token_ids
from .image_readout import ImageReadout
from .llm_loader import apply_lora, freeze_all, load_causal_lm
from .parallel_decoding import additive_mask, crop_cache, parallel_forward, prefix_allowed, pruned_parallel_forward
from .slot_group_attention import use_slot_group_attention
from .prompt import PromptBuilder, SequenceBatch, TokensPlusVector, assemble_batch
from .request_adapter import RequestAdapter
from .vocabulary import SpecialTokens, extend_vocabulary


class GeneratedTexts(list):
    """The generated texts (a list of str) and, in ``probabilities``, each text's probability under
    the decoding distribution (the product of its tokens', the end of the response included; with
    the text constraints applied): how sure the model was of the whole text."""

    def __init__(self, texts: Sequence[str], probabilities: Sequence[float]):
        super().__init__(texts)
        self.probabilities = list(probabilities)


def _word_vectors(referents: torch.Tensor, words: List[int]) -> torch.Tensor:
    """``[len(words), C]``: row t is the referent vector of word ``words[t]``, zero where -1."""
    index = torch.as_tensor(words, device=referents.device)
    rows = referents[index.clamp(min=0)]
    return rows * (index >= 0).unsqueeze(-1).to(rows.dtype)


def sample_meta(sample, key, default=None):
    return sample.metainfo.get(key, default)


class RegionPrompt(NamedTuple):
    """The regions of one prompt: location-token ids ``[R, 4]`` and read-out vectors
    ``[R, hidden]`` added to their embeddings (None: the tokens alone)."""
    ids: torch.Tensor
    vectors: Optional[torch.Tensor] = None


class LanguageModelDecoder(BaseModule):
    """A causal LM with new location / class / format tokens, optionally LoRA-adapted.

    Args:
        llm: where the LLM comes from: ``dict(source='smollm2' | '<local dir>' | 'meta',
            gguf_file=None, tokenizer_path=None, config=None, num_layers=None)``
            (see ``load_causal_lm``).
        prompt_style: ``'chat'`` (the tokenizer's chat template) or ``'alpaca'``.
        system_prompt: optional system message of chat templates.
        special_tokens: ``SpecialTokens`` arguments (bins, class-token budget, max points).
        lora: ``dict(rank, alpha, dropout, include_mlp)``, or None to freeze the LLM entirely
            (only the new vocabulary rows and the parts built on top train).
        vocab_init_noise / seed: initialisation of the new vocabulary rows.
        generate_format: at inference emit the format tokens greedily (the parser of the
            instruction is the fallback). False uses the parser directly: for decoders that were
            never trained to emit format tokens (the untrained decoders of the tests and of
            ``tools/benchmark_decoding.py``).
        max_new_tokens / num_beams: caption and answer generation.
        text_constraints: ``dict(no_repeat_ngram_size, repetition_penalty)`` applied to caption
            and answer generation against repetition (``build_text_constraints``), or None;
            ``request_words`` (a list of words, possibly empty) restricts the canonical form of a
            plain request (the ``request`` task) to the request's own words, the task names and
            these words (``canonical_vocabulary``); absent: unrestricted. ``request_categories``
            (with ``request_words``): names a category list ("detection: ...") may use besides
            the request's words, e.g. the classes a request for "every shape" expands to.
        request_adapter: ``dict(rank, alpha, targets)``: low-rank weights of the decoder layers
            used only while the LLM reads a plain request (``RequestAdapter``), or None.
    """

    def __init__(self, llm: Optional[dict] = None, prompt_style: str = "chat",
                 system_prompt: Optional[str] = None, special_tokens: Optional[dict] = None,
                 lora: Optional[dict] = dict(rank=8, alpha=16, dropout=0.05, include_mlp=False),
                 vocab_init_noise: float = 1.0, seed: int = 0, generate_format: bool = True,
                 max_new_tokens: int = 30, num_beams: int = 1, text_constraints: Optional[dict] = None,
                 request_adapter: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        from visionllm.instructions import LocationCodec
        llm = dict(llm or dict(source="smollm2"))
        model, tokenizer = load_causal_lm(**llm)
        # Slot passes skip the attention their isolated groups cannot see (slot_group_attention).
        use_slot_group_attention(model)
        self.on_meta = llm.get("source") == "meta"
        model = apply_lora(model, **lora) if lora is not None else freeze_all(model)
        self.special = SpecialTokens(**(special_tokens or {}))
        # New rows are added after LoRA injection so that they stay trainable.
        token_ids = extend_vocabulary(model, tokenizer, self.special, noise_std=vocab_init_noise, seed=seed)
        self.llm = model
        # mmengine's init_weights() calls `init_weights` of children not marked initialised; the
        # HF model has one, and the pretrained weights must never be re-initialised.
        self.llm.is_init = True
        self.tokenizer = tokenizer
        self.prompt = PromptBuilder(tokenizer, prompt_style, system_prompt) if tokenizer is not None else None
        self.codec = LocationCodec(self.special.num_bins)
        self.hidden_size = model.config.hidden_size

        def ids(tokens):
            return torch.tensor([token_ids[t] for t in tokens], dtype=torch.long)

        self.register_buffer("location_ids", ids(self.special.location_tokens), persistent=False)
        self.register_buffer("class_ids", ids(self.special.class_tokens), persistent=False)
        self.register_buffer("format_ids", ids(self.special.format_tokens), persistent=False)
        self.no_object_id = token_ids[self.special.no_object]
        self.field_ids = {tok[1:-1]: token_ids[tok] for tok in self.special.format_tokens}
        self.id_to_field = {v: k for k, v in self.field_ids.items()}
        self.new_token_ids = list(token_ids.values())
        self.generate_format = generate_format
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.text_constraints = build_text_constraints(text_constraints)
        words = (text_constraints or {}).get("request_words")
        self.request_words = None if words is None else tuple(words)
        self.request_categories = tuple((text_constraints or {}).get("request_categories") or ())
        self.image_readout: Optional[ImageReadout] = None
        self.request_adapter = (RequestAdapter(self.backbone.layers, **request_adapter)
                                if request_adapter is not None else None)
        # the weights the LLM source restores at build time (see frozen_pretrained_keys)
        self._frozen_at_build = frozenset(f"llm.{name}" for name, p in self.llm.named_parameters(remove_duplicate=False)
                                          if not p.requires_grad)

    def build_image_readout(self, config: Optional[dict]) -> None:
        """Give every decoder layer a cross-attention read-out of the image tokens (a registry
        config such as ``dict(type='ImageReadout', dims, num_heads)``), or none when ``config``
        is None."""
        from visionllm.models.components import build_optional
        device = "meta" if self.on_meta else None
        self.image_readout = build_optional(config, layers=self.backbone.layers, hidden_size=self.hidden_size,
                                            device=device)

    # ------------------------------------------------------------------ parameters / checkpoints
    @property
    def backbone(self) -> nn.Module:
        """The decoder stack (HF ``LlamaModel``) without the output layer."""
        return self.llm.model

    @property
    def embed_tokens(self):
        return self.llm.get_input_embeddings()

    @property
    def head(self):
        return self.llm.get_output_embeddings()

    def frozen_pretrained_keys(self) -> List[str]:
        """State-dict keys of the LLM weights frozen at build time (restored from the LLM source)."""
        from visionllm.engine.checkpoint import unwrapped_key  # names under FSDP units carry wrapper parts
        return [f"llm.{name}" for name, _ in self.llm.named_parameters(remove_duplicate=False)
                if unwrapped_key(f"llm.{name}") in self._frozen_at_build]

    def trainable_state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        frozen = set(self.frozen_pretrained_keys())
        return OrderedDict((k, v.detach().clone()) for k, v in self.state_dict().items() if k not in frozen)

    def load_trainable_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = sorted(set(missing) - set(self.frozen_pretrained_keys()))
        if missing or unexpected:
            raise KeyError(f"trainable state mismatch: missing {missing}, unexpected {unexpected}")

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _reading(self, image_embeds: torch.Tensor):
        """Context in which the decoder layers read ``image_embeds`` (row b: image of sequence b)."""
        return self.image_readout.attached(image_embeds) if self.image_readout is not None else nullcontext()

    # ------------------------------------------------------------------ sequences
    def _prompt_segments(self, instruction: str, image_embeds: torch.Tensor, history=None,
                         regions: Optional[RegionPrompt] = None,
                         referents: Optional[torch.Tensor] = None) -> list:
        """The prompt of one instruction, after the earlier turns of ``history`` (``[{"user",
        "assistant"}, ...]`` or None), as ``assemble_batch`` segments, none of them a target:
        ``<image>`` becomes the image-token embeddings, the k-th ``<region>`` of the instruction
        the location tokens of region k (with its read-out vector added to their embeddings when
        there is one); ``referents [W, C]``, one vector per word of the instruction
        (``ReferentReadout``), are added to the embeddings of each word's tokens."""
        segments, region = [], 0
        count = len(regions.ids) if regions is not None else 0
        if count_regions(instruction) != count:
            raise ValueError(f"the instruction has {count_regions(instruction)} <region> placeholder(s) but "
                             f"{count} region(s) came with it")
        if referents is None:
            pieces, words = self.prompt.encode_pieces(instruction, history), None
        else:
            pieces, words = self.prompt.encode_pieces_with_words(instruction, history)
        for k, piece in enumerate(pieces):
            if piece == IMAGE_PLACEHOLDER:
                segments.append((image_embeds, False))
            elif piece == REGION_PLACEHOLDER:
                ids = regions.ids[region].tolist()
                vector = regions.vectors[region] if regions.vectors is not None else None
                segments.append((TokensPlusVector(ids, vector) if vector is not None else ids, False))
                region += 1
            elif words is not None and any(w >= 0 for w in words[k]):
                segments.append((TokensPlusVector(piece, _word_vectors(referents, words[k])), False))
            else:
                segments.append((piece, False))
        return segments

    def _region_prompt(self, sample) -> Optional[RegionPrompt]:
        """The regions of a sample as the prompt writes them: location-token ids ``[R, 4]`` of
        its ``regions`` metainfo (pixels of ``img_shape``) and the read-out vectors the model put
        on the sample as ``region_embeds`` (None without a read-out); None without regions."""
        count = count_regions(sample_meta(sample, "instruction"))
        boxes = regions_of(sample_meta(sample, "regions"), count)
        if count == 0:
            return None
        h, w = sample_meta(sample, "img_shape")[:2]
        bins = region_bins(self.codec, boxes, (w, h))
        return RegionPrompt(self.location_ids[bins.to(self.location_ids.device)], sample.get("region_embeds"))

    def _prompt_context(self, sample) -> dict:
        """What a sample's prompt holds besides its instruction: the conversation's earlier
        turns and the regions (``_prompt_segments`` keywords)."""
        return dict(history=sample_meta(sample, "history"), regions=self._region_prompt(sample),
                    referents=sample.get("referent_embeds"))

    def _format_ids(self, fields: Sequence[str]) -> List[int]:
        return [self.field_ids[name] for name in fields]

    def _assemble(self, samples: List[list]) -> SequenceBatch:
        # In the dtype of the trainable table (the frozen base may be held in lower precision).
        param = self.embed_tokens.new_weight
        return assemble_batch(samples, self.embed_tokens, self.hidden_size, param.device, param.dtype)

    def _causal_hidden(self, batch: SequenceBatch, image_embeds: torch.Tensor, cache=None) -> torch.Tensor:
        """Final hidden states ``[B, L, C]`` of a left-padded batch read causally; ``cache``
        (a ``DynamicCache``) keeps the keys and values for a later continuation."""
        mask = additive_mask(prefix_allowed(batch.valid), batch.embeds.dtype).unsqueeze(1)
        with self._reading(image_embeds):
            return self.backbone(inputs_embeds=batch.embeds, attention_mask=mask, position_ids=batch.position_ids,
                                 past_key_values=cache, use_cache=cache is not None).last_hidden_state

    def _lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Next-token CE over the full vocabulary at target positions only."""
        where = labels != -100
        logits = self.head(hidden[where])
        return F.cross_entropy(logits, labels[where], reduction=reduction)

    def _text_loss(self, image_embeds, samples) -> torch.Tensor:
        """LM loss of each sample's ``target_text`` (then end of response) after its prompt: the
        mean over every target token, plain requests read with the request adapter (if any)."""
        total, count = image_embeds.new_zeros(()), 0
        for rows, adapted in self._request_groups([sample_meta(s, "instruction") for s in samples]):
            segments = []
            for i in rows:
                sample = samples[i]
                target = self.prompt.text_ids(sample_meta(sample, "target_text")) + [self.prompt.end_of_response_id]
                segments.append(self._prompt_segments(sample_meta(sample, "instruction"), image_embeds[i],
                                                      **self._prompt_context(sample)) + [(target, True)])
            batch = self._assemble(segments)
            with self._adapted(adapted):
                hidden = self._causal_hidden(batch, image_embeds[rows])
            total = total + self._lm_loss(hidden, batch.labels, reduction="sum")
            count += int((batch.labels != -100).sum())
        return total / max(count, 1)

    def _request_groups(self, instructions: Sequence[str]) -> List[Tuple[List[int], bool]]:
        """Rows of a text batch split into ``(rows, adapted)`` groups: with a request adapter,
        the plain requests (read with it) apart from the rest; without one, all rows together."""
        if self.request_adapter is None:
            return [(list(range(len(instructions))), False)]
        requests = [request_in(text) is not None for text in instructions]
        return [(rows, adapted) for adapted in (False, True)
                if (rows := [i for i, is_request in enumerate(requests) if is_request == adapted])]

    def _adapted(self, on: bool):
        """The request adapter's context when ``on`` (and there is one), else a no-op."""
        return self.request_adapter.active() if on and self.request_adapter is not None else nullcontext()

    # ------------------------------------------------------------------ generation
    def generate_text(self, image_embeds: torch.Tensor, instructions: List[str],
                      max_new_tokens: Optional[int] = None, num_beams: Optional[int] = None,
                      contexts: Optional[List[dict]] = None,
                      banned_words: Optional[Sequence[Optional[Sequence[str]]]] = None) -> GeneratedTexts:
        """Caption / answer generation with the KV cache of HF ``generate`` (greedy or beam);
        ``contexts``: per instruction its ``_prompt_context`` (or None); ``banned_words``: per
        instruction words its text may not contain (``BannedWords``), or None. The texts come
        with their probabilities (``GeneratedTexts``)."""
        contexts = contexts or [{}] * len(instructions)
        banned_words = banned_words or [None] * len(instructions)
        texts: List[str] = [""] * len(instructions)
        probabilities: List[float] = [0.0] * len(instructions)
        eos = self.prompt.end_of_response_id
        beams = num_beams or self.num_beams
        for rows, adapted in self._request_groups(instructions):
            group = [instructions[i] for i in rows]
            batch = self._assemble([self._prompt_segments(instructions[i], image_embeds[i], **contexts[i])
                                    for i in rows])
            with self._reading(image_embeds[rows]), self._adapted(adapted):
                output = self.llm.generate(
                    inputs_embeds=batch.embeds, attention_mask=batch.valid.long(),
                    max_new_tokens=max_new_tokens or self.max_new_tokens, num_beams=beams,
                    do_sample=False, eos_token_id=eos, pad_token_id=eos,
                    suppress_tokens=self.new_token_ids,
                    logits_processor=self._text_processors(group, [banned_words[i] for i in rows]),
                    output_scores=True, return_dict_in_generate=True)
                # log-probabilities of the chosen tokens (beam scores are already normalised)
                chosen = self.llm.compute_transition_scores(output.sequences, output.scores,
                                                            getattr(output, "beam_indices", None),
                                                            normalize_logits=beams == 1)
            sequences = output.sequences[:, -chosen.shape[1]:]
            for i, row, logp in zip(rows, sequences, chosen):
                texts[i] = self.tokenizer.decode(row, skip_special_tokens=True).strip()
                ends = (row == eos).nonzero()
                length = int(ends[0]) + 1 if len(ends) else len(row)  # up to the end of the response
                probabilities[i] = float(logp[:length].float().sum().exp())
        return GeneratedTexts(texts, probabilities)

    def _text_processors(self, instructions: List[str],
                         banned_words: Optional[Sequence[Optional[Sequence[str]]]] = None
                         ) -> Optional[LogitsProcessorList]:
        """The configured text constraints, plus ``AllowedTokens`` for the rows that are plain
        requests when ``request_words`` is set (``_request_vocabulary``) and ``BannedWords`` for
        rows with ``banned_words``."""
        processors = list(self.text_constraints or [])
        requests = [request_in(text) for text in instructions] if self.request_words is not None else []
        if any(request is not None for request in requests):
            processors.append(AllowedTokens([None if request is None else self._request_vocabulary(request)
                                             for request in requests]))
        if banned_words is not None and any(banned_words):
            processors.append(BannedWords([word_spellings(self.tokenizer, words) if words else None
                                           for words in banned_words]))
        return LogitsProcessorList(processors) if processors else None

    def _request_vocabulary(self, request: str):
        """The tokens a canonical form of ``request`` may use, as a function of what was generated:
        its words (``canonical_vocabulary``), the request's own tokens (its punctuation), the
        separators and the end of response; after "<category task>:" also ``request_categories``."""
        words = canonical_vocabulary(request, self.request_words)
        base = set(word_token_ids(self.tokenizer, words + [":", CATEGORY_SEPARATOR.strip(), "?"]))
        base |= set(self.tokenizer.encode(request, add_special_tokens=False))
        base.add(self.prompt.end_of_response_id)
        if not self.request_categories:
            return sorted(base)
        with_categories = sorted(base | set(word_token_ids(self.tokenizer, self.request_categories)))
        base, prefixes = sorted(base), tuple(f"{name}:" for name in category_tasks())

        def allowed(generated: List[int]) -> List[int]:
            text = self.tokenizer.decode(generated, skip_special_tokens=True).lstrip()
            return with_categories if text.startswith(prefixes) else base
        return allowed

    def _longest_format_ids(self) -> List[int]:
        """The tokens of the longest format the vocabulary writes: ``<cls> <x1> <y1> ... <xK> <yK>``."""
        from visionllm.instructions import OutputFormat
        return self._format_ids(OutputFormat.polygon(self.special.max_points).fields)

    def _format_stops(self, hidden: torch.Tensor) -> torch.Tensor:
        """Where greedy decoding under the format grammar ends the format.

        A format is ``<cls> <x1> <y1> ... <xK> <yK>``, so the only choice at each step is "next
        field" or "end of response" (allowed after a complete point, K >= 2). ``hidden [B, n, C]``
        are the hidden states after each of the first ``n`` tokens of the longest format. Returns
        per row the index j of the first token after which end of response wins (the format is
        then those j + 1 tokens), or -1 where decoding goes on past the n tokens.
        """
        ids = self._longest_format_ids()
        count = hidden.shape[1]
        choices = torch.tensor([self.prompt.end_of_response_id] + ids, device=hidden.device)
        logits = self.head.subset_logits(hidden, choices)  # [B, n, 1 + len(ids)]
        stop_logit = logits[:, :, 0]
        next_logit = torch.full_like(stop_logit, float("-inf"))
        known = min(count, len(ids) - 1)  # positions that have a next field (choice j + 2)
        next_logit[:, :known] = logits[:, torch.arange(known), torch.arange(2, known + 2)]
        # Position j has just read ids[j]; stopping is allowed after y_K (j = 2K, K >= 2).
        position = torch.arange(count, device=hidden.device)
        may_stop = (position >= 4) & (position % 2 == 0)
        stops = (stop_logit >= next_logit) & may_stop
        first = stops.int().argmax(dim=1)  # the first True (argmax returns the first maximum)
        return torch.where(stops.any(dim=1), first, torch.full_like(first, -1))

    def _format_draft(self, instruction: str) -> Optional[List[int]]:
        """The format tokens the instruction states (the parser's reading): what greedy format
        generation usually emits. None when it states none that the vocabulary can write."""
        from visionllm.instructions import UnsupportedOutputFormat, find_output_format
        try:
            stated = find_output_format(instruction)
        except UnsupportedOutputFormat:
            return None
        if stated is None or stated.num_points > self.special.max_points:
            return None
        return self._format_ids(stated.fields)

    @torch.no_grad()
    def _generate_format(self, image_embeds: torch.Tensor, instructions: List[str],
                         state: Optional[dict] = None,
                         contexts: Optional[List[dict]] = None) -> List[Optional[List[int]]]:
        """Greedy generation of the format tokens under the format grammar, in ONE forward pass.

        Greedy decoding would feed exactly the tokens of the longest format up to where it stops,
        so feeding that sequence teacher-forced and reading the choice at every position
        (``_format_stops``) gives the same result as step-by-step decoding without its per-token
        forward passes. ``None`` where the model never chooses to stop (the caller falls back to
        the parser).

        ``state``: a dict that receives the pass (``PromptCache``) for reuse by the slot pass;
        ``contexts``: per instruction its ``_prompt_context`` (earlier turns, regions) or None.
        """
        ids = self._longest_format_ids()
        contexts = contexts or [{}] * len(instructions)
        batch = self._assemble([self._prompt_segments(t, e, **c) + [(ids, False)]
                                for t, e, c in zip(instructions, image_embeds, contexts)])
        cache = None
        if state is not None:
            from transformers import DynamicCache
            cache = DynamicCache(config=self.backbone.config)
        hidden = self._causal_hidden(batch, image_embeds, cache)
        if state is not None:
            state["cache"] = PromptCache(batch, hidden, cache, ids)
        # Left padding: the format tokens are the last positions of every row.
        stops = self._format_stops(hidden[:, -len(ids):])
        return [ids[:int(j) + 1] if j >= 0 else None for j in stops]

    def _structured_prefix(self, image_embeds, instructions: List[str], fields: Sequence[str],
                           contexts: Optional[List[dict]] = None) -> SequenceBatch:
        """Prompt + format tokens + end of response of each instruction (the format as LM
        targets); ``contexts``: per instruction its ``_prompt_context`` or None."""
        format_ids = self._format_ids(fields) + [self.prompt.end_of_response_id]
        contexts = contexts or [{}] * len(instructions)
        return self._assemble([self._prompt_segments(text, embeds, **context) + [(format_ids, True)]
                               for text, embeds, context in zip(instructions, image_embeds, contexts)])

    @torch.no_grad()
    def _drafted_pass(self, image_embeds: torch.Tensor, instructions: List[str], draft: List[int],
                      group_embeds: torch.Tensor, contexts: Optional[List[dict]] = None, keep=None):
        """Prompt, a drafted format, end of response and the slot groups in ONE forward pass.

        The hidden states after the draft's tokens tell where greedy format generation would have
        stopped (``_format_stops``): where it is the draft's end, the draft is what generation
        emits and the groups saw exactly the prefix they would have seen after it. Returns
        ``(stops, prefix, prefix hidden, group hidden, PromptCache)``; the cache (prompt + draft +
        end of response) serves a slot pass for a row that stopped earlier. ``keep(prefix,
        prefix_hidden, first_hidden)``: which groups to finish (``pruned_parallel_forward``);
        None finishes all.
        """
        from transformers import DynamicCache
        prefix = self._structured_prefix(image_embeds, instructions, [self.id_to_field[i] for i in draft], contexts)
        cache = DynamicCache(config=self.backbone.config)
        with self._reading(image_embeds):
            if keep is None:
                prefix_hidden, group_hidden = parallel_forward(self.backbone, prefix, group_embeds, cache=cache)
            else:
                prefix_hidden, group_hidden = pruned_parallel_forward(
                    self.backbone, prefix, group_embeds, cache, lambda hidden, first: keep(prefix, hidden, first))
        crop_cache(cache, prefix.embeds.shape[1])
        # Left padding: the draft's tokens sit just before the final end of response.
        stops = self._format_stops(prefix_hidden[:, -len(draft) - 1:-1])
        fed = list(draft) + [self.prompt.end_of_response_id]
        return stops, prefix, prefix_hidden, group_hidden, PromptCache(prefix, prefix_hidden, cache, fed)

    def _decode_format(self, image_embeds: torch.Tensor, instructions: List[str],
                       state: Optional[dict] = None,
                       contexts: Optional[List[dict]] = None) -> List[Tuple[str, ...]]:
        """The output format of each instruction: the generated format tokens when they form a
        valid format, else the parser's reading of the instruction."""
        from visionllm.instructions import OutputFormat, parse_output_format
        generated = [None] * len(instructions)
        if self.generate_format:
            generated = self._generate_format(image_embeds, instructions, state, contexts)
        formats = []
        for text, ids in zip(instructions, generated):
            fields = None
            if ids is not None:
                try:
                    fields = OutputFormat(tuple(self.id_to_field[i] for i in ids)).fields
                except (KeyError, ValueError):
                    fields = None
            formats.append(fields or parse_output_format(text).fields)
        return formats


class PromptCache:
    """A causal pass over ``prompt + fed token ids`` kept for continuation.

    ``batch`` and ``hidden`` are the pass's inputs and hidden states, ``cache`` its keys and
    values, ``fed`` the token ids read after each prompt (the same for every row).
    """

    def __init__(self, batch: SequenceBatch, hidden: torch.Tensor, cache, fed: Sequence[int]):
        self.batch, self.hidden, self.cache, self.fed = batch, hidden, cache, list(fed)

    @property
    def prompt_length(self) -> int:
        """Padded length of the prompt part (everything before the fed ids)."""
        return self.batch.embeds.shape[1] - len(self.fed)

    def continuation(self, rows: List[int], tail: Sequence[int]) -> Tuple[object, SequenceBatch, List[int]]:
        """The cache of some rows cut after the longest common start of ``fed`` and ``tail``.

        Returns ``(cache, kept, rest)``: the cut copy of the cache, the batch of the kept
        positions (prompt and shared ids) and the ids of ``tail`` still to be read.
        """
        shared = 0
        while shared < min(len(self.fed), len(tail)) and self.fed[shared] == tail[shared]:
            shared += 1
        keep = self.prompt_length + shared
        cache = copy.deepcopy(self.cache)
        cache.batch_select_indices(torch.tensor(rows, device=self.hidden.device))
        crop_cache(cache, keep)
        kept = SequenceBatch(self.batch.embeds[rows, :keep], self.batch.valid[rows, :keep],
                             self.batch.labels[rows, :keep],
                             self.batch.input_ids[rows, :keep] if self.batch.input_ids is not None else None)
        return cache, kept, list(tail[shared:])
