"""The LLM task decoder: instruction + image tokens → boxes, polygons, grounding boxes or text.

Structured tasks (detection, segmentation, grounding) use output-format-as-query decoding
(``parallel_decoding``): the response starts with the format tokens, then N slot groups are
decoded in one forward pass and each field is read over its allowed token subset. Captions and
answers are ordinary generation with a KV cache.

The parts: ``LanguageModelDecoder`` (the LLM, its vocabulary, prompts, hidden states and
generation), ``structured_head`` (slot queries → field logits), ``StructuredCriterion``
(matching and loss terms), ``StructuredPasses`` (which LLM passes inference runs) and
``StructuredPostProcessor`` (decoding, merging, rescaling). This module owns the head's
parameters and routes samples between the parts. At inference only the slots that can be kept
(a caller's score threshold, one box for grounding) get their coordinates decoded
(``pruned_parallel_forward``).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from visionllm.models import refinement  # noqa: F401  (registers BoxRefinement, PolygonRefinement)
from visionllm.models.components import build_optional
from visionllm.models.refinement import extent_boxes
from visionllm.registry import MODELS
from visionllm.tasks import task_of_instruction

from .class_pointer import ClassPointer
from .criterion import StructuredCriterion, combine_terms
from .embedding_scale import ScaledProjection, embedding_rms
from .language_model import LanguageModelDecoder, sample_meta
from .parallel_decoding import autoregressive_forward, parallel_forward
from .postprocess import SlotPredictions, StructuredPostProcessor, rasterize_polygons  # noqa: F401  (re-export)
from .prompt import SequenceBatch
from .structured_head import SlotLogits, class_context, field_logits, slot_queries
from .structured_passes import StructuredPasses


def _feature_rows(features: Dict[str, torch.Tensor], rows: List[int]) -> Dict[str, torch.Tensor]:
    """The image features of some batch rows (the level layout is shared by all rows)."""
    shared = ("spatial_shapes", "level_start_index")
    return {k: v if k in shared else v[rows] for k, v in features.items()}


def _forwarded(part: str, name: str) -> property:
    """An attribute of the decoder that lives on one of its parts (read and set through it)."""
    return property(lambda self: getattr(getattr(self, part), name),
                    lambda self, value: setattr(getattr(self, part), name, value))


@MODELS.register_module()
class LLMTaskDecoder(StructuredPasses, LanguageModelDecoder):
    """LLaMA-family decoder with an extended vocabulary, LoRA, and parallel structured outputs.

    Args:
        llm, prompt_style, system_prompt, special_tokens, lora, vocab_init_noise, seed,
            generate_format, max_new_tokens, num_beams, text_constraints, request_adapter: see
            ``LanguageModelDecoder``.
        num_slots: slot groups per image (None: one per image token). The slot groups are
            isolated from each other.
        decode_mode: ``'parallel'``, or ``'autoregressive'``: the token-by-token baseline with the
            same outputs, which the tests compare parallel decoding with.
        reuse_prompt_cache: at inference read each prompt once (parallel mode with
            ``generate_format``): the format the instruction states is verified as a draft in the
            same pass as the slot groups, and where generation differs from it the slot pass
            continues the cached prompt (``_slot_passes``); the outputs are those of generating
            the format and reading prompt and format again, up to float rounding. False is that
            reference, which ``tools/benchmark_inference.py`` times it against.
        matcher: ``TASK_UTILS`` config of the slot ↔ ground-truth matcher (coordinate cost
            ``'l1'`` on image-size-normalised expected coordinates).
        no_object_weight: class-loss weight of unmatched slots (target: no-object).
        loss_weights: weights of ``cls``, ``loc`` (cross-entropy on the location tokens),
            ``loc_l1`` (L1 of the expected coordinate, image-size normalised: an ordinal signal
            the bin cross-entropy lacks), ``giou`` (1 - GIoU of the extent boxes of the expected
            and true points: an error relative to the object's size, where the image-size
            normalised L1 weighs a 1-pixel error on a small object like one on a large object; 0
            by default), ``format`` (LM on format tokens), ``text``, and with ``box_refinement``
            ``refine_l1`` / ``refine_giou`` (L1 and 1 - GIoU of every refinement step's boxes),
            with ``polygon_refinement`` ``refine_polygon`` (the mean distance between every step's
            outline and the true one, image-size normalised; see ``outline_distance``).
        max_classes_per_pass: category sets larger than this run in several passes (default: the
            class-token budget).
        image_readout: registry config of a cross-attention read-out of the image tokens in every
            decoder layer (``ImageReadout``), or None.
        box_refinement: registry config of the refinement of decoded boxes on the image
            tokenizer's memory (``BoxRefinement``), or None. Box formats only.
        polygon_refinement: the same for the vertices of decoded polygons
            (``PolygonRefinement``), or None (polygons are decoded as written).
        image_dims / image_levels: width and levels of the image tokenizer's memory, which the
            refinements read (``VisionLLM`` passes them); needed only with a refinement.
        max_per_img / score_thr / nms_iou: structured predictions kept per image (see
            ``StructuredPostProcessor`` for how coordinates and grounding answers are decoded).

    Each class logit also gets a learned score between the slot and the prompt's hidden state at
    that class token (``ClassPointer``). The read-out, the refinements' corrections and the class
    pointer's score start at zero (``init_weights``).
    """

    def __init__(self, llm: Optional[dict] = None, prompt_style: str = "chat",
                 system_prompt: Optional[str] = None, special_tokens: Optional[dict] = None,
                 lora: Optional[dict] = dict(rank=8, alpha=16, dropout=0.05, include_mlp=False),
                 num_slots: Optional[int] = None, decode_mode: str = "parallel", generate_format: bool = True,
                 matcher: Optional[dict] = None, no_object_weight: float = 0.1,
                 loss_weights: Optional[dict] = None, max_classes_per_pass: Optional[int] = None,
                 max_new_tokens: int = 30, num_beams: int = 1, max_per_img: int = 100,
                 score_thr: float = 0.0, nms_iou: Optional[float] = None, vocab_init_noise: float = 1.0, seed: int = 0,
                 image_readout: Optional[dict] = dict(type="ImageReadout", dims=128, num_heads=4),  # noqa: B006
                 box_refinement: Optional[dict] = dict(type="BoxRefinement", num_layers=2),  # noqa: B006
                 polygon_refinement: Optional[dict] = dict(type="PolygonRefinement", num_layers=2),  # noqa: B006
                 image_dims: Optional[int] = None, image_levels: Optional[int] = None,
                 reuse_prompt_cache: bool = True, text_constraints: Optional[dict] = None,
                 request_adapter: Optional[dict] = None, init_cfg: Optional[dict] = None):
        if decode_mode not in ("parallel", "autoregressive"):
            raise ValueError(f"decode_mode must be 'parallel' or 'autoregressive', got {decode_mode!r}")
        super().__init__(llm=llm, prompt_style=prompt_style, system_prompt=system_prompt,
                         special_tokens=special_tokens, lora=lora, vocab_init_noise=vocab_init_noise, seed=seed,
                         generate_format=generate_format, max_new_tokens=max_new_tokens, num_beams=num_beams,
                         text_constraints=text_constraints, request_adapter=request_adapter, init_cfg=init_cfg)
        # Slot embedding from image token i, added to every format-token query of group i.
        device = "meta" if self.on_meta else None
        # At the scale of the word embeddings, so the format token still tells the fields apart.
        self.input_rms = embedding_rms(self.embed_tokens.weight)
        self.slot_proj = ScaledProjection(self.hidden_size, self.hidden_size, self.input_rms, device=device)
        # <ci> means "the i-th category named in this instruction": slots point at it (see
        # ClassPointer), starting from the plain token readout.
        self.class_pointer = ClassPointer(self.hidden_size, device=device)
        self.build_image_readout(image_readout)
        self.box_refinement = self._build_refinement("box_refinement", box_refinement, image_dims, image_levels)
        self.polygon_refinement = self._build_refinement("polygon_refinement", polygon_refinement,
                                                         image_dims, image_levels)

        self.num_slots = num_slots
        self.decode_mode = decode_mode
        self.reuse_prompt_cache = reuse_prompt_cache
        self.criterion = StructuredCriterion(self.codec, matcher, no_object_weight, loss_weights)
        self.postprocessor = StructuredPostProcessor(self.codec, max_per_img, score_thr, nms_iou)
        self.max_classes_per_pass = max_classes_per_pass or self.special.num_classes
        if self.max_classes_per_pass > self.special.num_classes:
            raise ValueError("max_classes_per_pass exceeds the number of class tokens")

    loss_weights = _forwarded("criterion", "loss_weights")
    no_object_weight = _forwarded("criterion", "no_object_weight")
    matcher = _forwarded("criterion", "matcher")
    max_per_img = _forwarded("postprocessor", "max_per_img")
    score_thr = _forwarded("postprocessor", "score_thr")
    nms_iou = _forwarded("postprocessor", "nms_iou")

    @staticmethod
    def _build_refinement(name: str, cfg: Optional[dict], image_dims: Optional[int],
                          image_levels: Optional[int]) -> Optional[nn.Module]:
        """A refinement reading the image tokenizer's memory (its width and levels filled in)."""
        if cfg is None:
            return None
        known = {k: v for k, v in dict(embed_dims=image_dims, num_levels=image_levels).items() if v is not None}
        if isinstance(cfg, dict) and not {"embed_dims", "num_levels"} <= set(cfg) | set(known):
            raise ValueError(f"{name} reads the image tokenizer's memory: give image_dims and image_levels "
                             f"(VisionLLM passes them) or set {name}=None")
        return build_optional(cfg, **known)

    # ------------------------------------------------------------------ the head
    def _slot_count(self, num_image_tokens: int) -> int:
        n = self.num_slots or num_image_tokens
        if n > num_image_tokens:
            raise ValueError(f"{n} slots but only {num_image_tokens} image tokens to bind them to")
        return n

    def _group_embeds(self, image_embeds: torch.Tensor, fields: Sequence[str]) -> torch.Tensor:
        """``[B, N, F, C]`` queries: format-token embedding + slot embedding of image token i."""
        field_ids = torch.tensor(self._format_ids(fields), device=image_embeds.device)
        return slot_queries(self.embed_tokens, self.slot_proj, image_embeds, field_ids,
                            self._slot_count(image_embeds.shape[1]))

    def _field_logits(self, group_hidden: torch.Tensor, num_categories: int,
                      class_context: Optional[torch.Tensor] = None,
                      class_prior: Optional[torch.Tensor] = None) -> SlotLogits:
        """Field logits of one image's slots, over the allowed token subsets (``field_logits``)."""
        return field_logits(self.head, group_hidden, self.class_ids, self.no_object_id, self.location_ids,
                            num_categories, self.class_pointer, class_context, class_prior)

    def _class_context(self, prefix_hidden: Optional[torch.Tensor], prefix: SequenceBatch, row: int,
                       num_categories: int) -> Optional[torch.Tensor]:
        """The prompt's hidden states at the class tokens of row ``row``; None without them."""
        if prefix_hidden is None or prefix.input_ids is None:
            return None
        return class_context(prefix_hidden, prefix, row, self.class_ids, num_categories)

    def _run_groups(self, prefix: SequenceBatch, group_embeds: torch.Tensor,
                    mode: str) -> Tuple[torch.Tensor, torch.Tensor]:
        if mode == "autoregressive":
            return autoregressive_forward(self.backbone, prefix, group_embeds, return_prefix=True)
        return parallel_forward(self.backbone, prefix, group_embeds)

    def _features_of(self, image_features: Optional[Dict[str, torch.Tensor]], rows: List[int]):
        """The refinements' image features of some batch rows (None without refinement)."""
        if self.box_refinement is None and self.polygon_refinement is None:
            return None
        if image_features is None:
            raise ValueError("box_refinement / polygon_refinement need the image features (VisionLLM passes them)")
        return _feature_rows(image_features, rows)

    def _refinement_for(self, num_points: int) -> Optional[nn.Module]:
        """The refinement of a format with ``num_points`` points per slot (2: a box), or None."""
        return self.box_refinement if num_points == 2 else self.polygon_refinement

    def _refine(self, features: Dict[str, torch.Tensor], row: int, slots, points: torch.Tensor,
                img_wh: Tuple[float, float]) -> List[torch.Tensor]:
        """Refinement steps of the decoded points ``[n, K, 2]`` (pixels) of some slots of one
        image, each ``[n, K, 2]`` normalised by the image size (K = 2: the corners of the
        refined box)."""
        one = _feature_rows(features, [row])
        size = points.new_tensor(img_wh)
        if points.shape[1] == 2:
            boxes = extent_boxes(points) / size.repeat(2)
            return [step[0].view(-1, 2, 2) for step in self.box_refinement(one["tokens"][:, slots], boxes[None], one)]
        return [step[0] for step in self.polygon_refinement(one["tokens"][:, slots], (points / size)[None], one)]

    # ------------------------------------------------------------------ training
    def loss(self, image_embeds: torch.Tensor, reference_points: torch.Tensor,
             data_samples: List, class_priors: Optional[List[Optional[torch.Tensor]]] = None,
             image_features: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """``class_priors``: per sample ``[M, n]`` token-to-category logits or None (see
        ``field_logits``); ``image_features``: what the box and polygon refinements read
        (see ``VisionLLM._image_features``), needed only with them."""
        structured: Dict[Tuple[str, ...], List[int]] = {}
        text: List[int] = []
        for i, sample in enumerate(data_samples):
            if task_of_instruction(sample_meta(sample, "instruction")).structured:
                structured.setdefault(self._fields_of(sample), []).append(i)
            else:
                text.append(i)
        terms: Dict[str, List[Tuple[torch.Tensor, float]]] = {}
        for fields, indices in structured.items():
            priors = [class_priors[i] for i in indices] if class_priors is not None else None
            for name, value, weight in self._structured_loss(
                    image_embeds[indices], reference_points[indices], [data_samples[i] for i in indices], fields,
                    priors, self._features_of(image_features, indices)):
                terms.setdefault(name, []).append((value, weight))
        if text:
            value = self._text_loss(image_embeds[text], [data_samples[i] for i in text])
            terms.setdefault("text", []).append((value, float(len(text))))
        return combine_terms(terms, self.loss_weights)

    def _fields_of(self, sample) -> Tuple[str, ...]:
        fields = sample_meta(sample, "output_format")
        if fields:
            return tuple(fields)
        from visionllm.instructions import parse_output_format
        return parse_output_format(sample_meta(sample, "instruction")).fields

    def _structured_loss(self, image_embeds, reference_points, samples, fields, class_priors=None,
                         image_features=None):
        """Yield ``(name, loss, weight)`` for one sub-batch sharing an output format."""
        prefix = self._structured_prefix(image_embeds, [sample_meta(s, "instruction") for s in samples], fields,
                                         [self._prompt_context(s) for s in samples])
        with self._reading(image_embeds):
            prefix_hidden, group_hidden = parallel_forward(self.backbone, prefix, self._group_embeds(image_embeds, fields))
        yield "format", self._lm_loss(prefix_hidden, prefix.labels), float(len(samples))
        logits = []
        for b, sample in enumerate(samples):
            n = len(sample_meta(sample, "categories"))
            if n > self.special.num_classes:
                raise ValueError(f"{n} categories exceed the {self.special.num_classes} class tokens")
            logits.append(self._field_logits(group_hidden[b], n, self._class_context(prefix_hidden, prefix, b, n),
                                             class_priors[b] if class_priors is not None else None))
        num_points = (len(fields) - 1) // 2
        refine = None
        if self._refinement_for(num_points) is not None:
            def refine(b, slots, points, img_wh):
                return self._refine(image_features, b, slots, points, img_wh)
        yield from self.criterion.terms(logits, reference_points, samples, num_points, refine, fallback=group_hidden)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, image_embeds: torch.Tensor, reference_points: torch.Tensor,
                data_samples: List, class_priors: Optional[List[Optional[torch.Tensor]]] = None,
                image_features: Optional[Dict[str, torch.Tensor]] = None) -> List:
        structured, text = [], []
        for i, sample in enumerate(data_samples):
            if "composed_answer" in sample.metainfo:  # composed from other outputs: restore() answers it
                continue
            (structured if task_of_instruction(sample_meta(sample, "instruction")).structured else text).append(i)
        if structured:
            self._predict_structured(image_embeds[structured], reference_points[structured],
                                     [data_samples[i] for i in structured],
                                     [class_priors[i] for i in structured] if class_priors is not None else None,
                                     self._features_of(image_features, structured))
        if text:
            texts = self.generate_text(image_embeds[text], [sample_meta(data_samples[i], "instruction") for i in text],
                                       contexts=[self._prompt_context(data_samples[i]) for i in text],
                                       banned_words=[sample_meta(data_samples[i], "banned_words") for i in text])
            probabilities = getattr(texts, "probabilities", [None] * len(texts))
            for i, value, probability in zip(text, texts, probabilities):
                data_samples[i].pred_text = value
                if probability is not None:
                    data_samples[i].pred_text_probability = probability
        return data_samples

    def _predict_structured(self, image_embeds, reference_points, samples, class_priors=None,
                            image_features=None) -> None:
        passes = self._category_passes(samples)
        pass_embeds, instructions = image_embeds[[p[0] for p in passes]], [p[1] for p in passes]
        decoded: Dict[int, SlotPredictions] = {}
        contexts = [self._prompt_context(samples[p[0]]) for p in passes]

        def prior_of(k: int) -> Optional[torch.Tensor]:
            i, _, names, offset = passes[k]
            if class_priors is None or class_priors[i] is None:
                return None
            return class_priors[i][:, offset:offset + len(names)]

        def keep(members, prefix, prefix_hidden, first_hidden) -> torch.Tensor:
            """The slots merge can keep, from their class field alone."""
            rows = []
            for row, k in enumerate(members):
                i, names = passes[k][0], passes[k][2]
                context = self._class_context(prefix_hidden, prefix, row, len(names))
                logits = self._field_logits(first_hidden[row, :, None], len(names), context, prior_of(k))
                scores, _ = self.postprocessor.slot_scores(logits.cls, samples[i], len(names), prior_of(k))
                rows.append(self.postprocessor.survivors(scores, samples[i]))
            return torch.stack(rows)

        num_slots = self._slot_count(image_embeds.shape[1])
        prune = any(self.postprocessor.can_drop(sample, num_slots) for sample in samples)
        for slot_pass in self._slot_passes(pass_embeds, instructions, contexts, keep if prune else None):
            for k, row in zip(slot_pass.members, slot_pass.rows):
                i, _, names, offset = passes[k]
                context = self._class_context(slot_pass.prefix_hidden, slot_pass.prefix, row, len(names))
                prior = prior_of(k)
                slots = self._decode_slots(slot_pass.group_hidden[row], reference_points[i], samples[i], len(names),
                                           offset, slot_pass.fields, context, prior)
                if image_features is not None and self._refinement_for(slots.points.shape[1]) is not None:
                    slots.points = self._refined_points(image_features, i, slots.points, samples[i])
                decoded[k] = slots
        results: Dict[int, List[SlotPredictions]] = {}
        for k in sorted(decoded):  # in pass order, whichever slot pass decoded it
            results.setdefault(passes[k][0], []).append(decoded[k])
        for i, sample in enumerate(samples):
            sample.pred_instances = self.postprocessor.merge(results[i], sample)

    def _decode_slots(self, group_hidden, refs, sample, num_categories, offset, fields, class_context=None,
                      class_prior=None) -> SlotPredictions:
        logits = self._field_logits(group_hidden, num_categories, class_context, class_prior)
        return self.postprocessor.decode(logits, refs, sample, num_categories, offset, class_prior)

    def _refined_points(self, features, row: int, points: torch.Tensor, sample) -> torch.Tensor:
        """Decoded points ``[N, K, 2]`` (pixels) of one image after their refinement."""
        h, w = sample_meta(sample, "img_shape")[:2]
        img_wh = (float(w), float(h))
        return self._refine(features, row, torch.arange(len(points)), points, img_wh)[-1] * points.new_tensor(img_wh)
