"""The LLM task decoder: instruction + image tokens → boxes, polygons, grounding boxes or text.

Structured tasks (detection, segmentation, grounding) use output-format-as-query decoding
(``parallel_decoding``): the response starts with the format tokens, then N slot groups are
decoded in one forward pass and each field is read over its allowed token subset. Captions and
answers are ordinary generation with a KV cache.
"""
from collections import OrderedDict
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import nn
from torchvision.ops import generalized_box_iou_loss

import visionllm.models.matching  # noqa: F401  (registers HungarianMatcher)
from visionllm.instructions import STRUCTURED_TASKS, TEXT_TASKS
from visionllm.models.refinement import BoxRefinement, PolygonRefinement, extent_boxes, outline_distance
from visionllm.registry import MODELS, TASK_UTILS

from .class_pointer import ClassPointer
from .embedding_scale import ScaledProjection, embedding_rms
from .image_readout import ImageReadout
from .llm_loader import apply_lora, freeze_all, load_causal_lm
from .parallel_decoding import (additive_mask, autoregressive_forward, parallel_forward,
                                prefix_allowed)
from .prompt import PromptBuilder, SequenceBatch, assemble_batch
from .vocabulary import SpecialTokens, extend_vocabulary



def _meta(sample, key, default=None):
    return sample.metainfo.get(key, default)


def _feature_rows(features: Dict[str, torch.Tensor], rows: List[int]) -> Dict[str, torch.Tensor]:
    """The image features of some batch rows (the level layout is shared by all rows)."""
    shared = ("spatial_shapes", "level_start_index")
    return {k: v if k in shared else v[rows] for k, v in features.items()}


@MODELS.register_module()
class LLMTaskDecoder(BaseModule):
    """LLaMA-family decoder with an extended vocabulary, LoRA, and parallel structured outputs.

    Args:
        llm: where the LLM comes from: ``dict(source='smollm2' | '<local dir>' | 'meta',
            gguf_file=None, tokenizer_path=None, config=None, num_layers=None)``
            (see ``load_causal_lm``).
        prompt_style: ``'chat'`` (the tokenizer's chat template) or ``'alpaca'``.
        special_tokens: ``SpecialTokens`` arguments (bins, class-token budget, max points).
        lora: ``dict(rank, alpha, dropout, include_mlp)``, or None to freeze the LLM entirely
            (only new vocabulary rows and the slot projection train).
        num_slots: slot groups per image (None: one per image token).
        groups_see_each_other: let slot groups attend to each other (de-duplication) instead of
            being isolated.
        decode_mode: ``'parallel'`` or ``'autoregressive'`` (baseline, same outputs token by token).
        generate_format: at inference emit the format tokens greedily (the parser of the
            instruction is the fallback); False uses the parser directly.
        coord_decode: ``'argmax'`` or ``'expectation'`` of the location distribution.
        matcher: ``TASK_UTILS`` config of the slot ↔ ground-truth matcher (coordinate cost
            ``'l1'`` on image-size-normalised expected coordinates).
        no_object_weight: class-loss weight of unmatched slots (target: no-object).
        loss_weights: weights of ``cls``, ``loc`` (cross-entropy on the location tokens),
            ``loc_l1`` (L1 of the expected coordinate, image-size normalised: an ordinal signal
            the bin cross-entropy lacks, so sizes converge in far fewer steps), ``giou`` (1 - GIoU
            of the extent boxes of the expected and true points: an error relative to the
            object's size, which is what box AP at IoU 0.75 judges; the image-size-normalised L1
            weighs a 1-pixel error on a small object like one on a large object; 0 by default),
            ``format`` (LM on format tokens), ``text``, and with ``box_refinement``
            ``refine_l1`` / ``refine_giou`` (L1 and 1 - GIoU of every refinement step's boxes),
            with ``polygon_refinement`` ``refine_polygon`` (the mean distance between every step's
            outline and the true one, image-size normalised; see ``outline_distance``).
        max_classes_per_pass: category sets larger than this run in several passes (default: the
            class-token budget).
        contextual_class_logits: add to each class logit a learned score between the slot and
            the prompt's hidden state at that class token (``ClassPointer``).
        image_readout: ``dict(dims, num_heads)`` to give every decoder layer a zero-initialised
            cross-attention read-out of the image tokens (``ImageReadout``), or None.
        box_refinement: arguments of ``BoxRefinement`` (``embed_dims`` and ``num_levels`` of the
            image tokenizer's memory, which ``VisionLLM`` fills in) to refine decoded boxes on
            the image features, or None. Box formats only.
        polygon_refinement: the same for the vertices of decoded polygons
            (``PolygonRefinement``), or None (polygons are decoded as written).
        max_new_tokens / num_beams: caption and answer generation.
        max_per_img / score_thr: structured predictions kept per image.
        grounding_score: how the one box of a grounding answer is chosen among the slots:
            ``'model'`` (the class probability, LLM logit + token class prior) or
            ``'alignment'`` (the sigmoid of the token class prior alone, when there is one). Each
            slot's LLM logit is computed without seeing the other slots, so it cannot tell "the
            left one" of two squares; the (relational) alignment can. Measured on the step-10
            shapes model, 600 val expressions not used for anything else: 77.7 % with
            ``'model'``, 80.5 % with ``'alignment'`` (left 39 → 54 of 80).
    """

    def __init__(self, llm: Optional[dict] = None, prompt_style: str = "chat",
                 system_prompt: Optional[str] = None, special_tokens: Optional[dict] = None,
                 lora: Optional[dict] = dict(rank=8, alpha=16, dropout=0.05, include_mlp=False),
                 num_slots: Optional[int] = None, groups_see_each_other: bool = False,
                 decode_mode: str = "parallel", generate_format: bool = True,
                 coord_decode: str = "argmax",
                 matcher: Optional[dict] = None, no_object_weight: float = 0.1,
                 loss_weights: Optional[dict] = None, max_classes_per_pass: Optional[int] = None,
                 max_new_tokens: int = 30, num_beams: int = 1, max_per_img: int = 100,
                 score_thr: float = 0.0, grounding_score: str = "model", vocab_init_noise: float = 1.0, seed: int = 0,
                 contextual_class_logits: bool = True, image_readout: Optional[dict] = None,
                 box_refinement: Optional[dict] = None, polygon_refinement: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        from visionllm.instructions import LocationCodec
        if decode_mode not in ("parallel", "autoregressive"):
            raise ValueError(f"decode_mode must be 'parallel' or 'autoregressive', got {decode_mode!r}")
        if coord_decode not in ("argmax", "expectation"):
            raise ValueError(f"coord_decode must be 'argmax' or 'expectation', got {coord_decode!r}")
        llm = dict(llm or dict(source="smollm2"))
        model, tokenizer = load_causal_lm(**llm)
        self.on_meta = llm.get("source") == "meta"
        if lora is not None:
            model = apply_lora(model, **lora)
        else:
            model = freeze_all(model)
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

        # Slot embedding from image token i, added to every format-token query of group i.
        device = "meta" if self.on_meta else None
        # At the scale of the word embeddings, so the format token still tells the fields apart.
        self.input_rms = embedding_rms(self.embed_tokens.weight)
        self.slot_proj = ScaledProjection(self.hidden_size, self.hidden_size, self.input_rms, device=device)

        # <ci> means "the i-th category named in this instruction": slots point at it (see
        # ClassPointer), starting from the plain token readout.
        self.class_pointer = ClassPointer(self.hidden_size, device=device) if contextual_class_logits else None

        self.image_readout = (ImageReadout(self.backbone.layers, self.hidden_size, device=device, **image_readout)
                              if image_readout is not None else None)
        self.box_refinement = BoxRefinement(**box_refinement) if box_refinement is not None else None
        self.polygon_refinement = (PolygonRefinement(**polygon_refinement)
                                   if polygon_refinement is not None else None)

        self.num_slots = num_slots
        self.groups_see_each_other = groups_see_each_other
        self.decode_mode = decode_mode
        self.generate_format = generate_format
        self.coord_decode = coord_decode
        self.matcher = TASK_UTILS.build(matcher or dict(type="HungarianMatcher", class_weight=1.0,
                                                        coord_weight=5.0, coord_cost="l1"))
        self.no_object_weight = no_object_weight
        self.loss_weights = dict(cls=1.0, loc=1.0, loc_l1=5.0, giou=0.0, format=1.0, text=1.0,
                                 refine_l1=5.0, refine_giou=2.0, refine_polygon=10.0)
        unknown = set(loss_weights or {}) - set(self.loss_weights)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; expected some of {sorted(self.loss_weights)}")
        self.loss_weights.update(loss_weights or {})
        self.max_classes_per_pass = max_classes_per_pass or self.special.num_classes
        if self.max_classes_per_pass > self.special.num_classes:
            raise ValueError("max_classes_per_pass exceeds the number of class tokens")
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.max_per_img = max_per_img
        self.score_thr = score_thr
        if grounding_score not in ("model", "alignment"):
            raise ValueError(f"grounding_score must be 'model' or 'alignment', got {grounding_score!r}")
        self.grounding_score = grounding_score

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
        """State-dict keys of frozen LLM weights (restored from the LLM source at build time)."""
        return [f"llm.{name}" for name, p in self.llm.named_parameters(remove_duplicate=False)
                if not p.requires_grad]

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

    # ------------------------------------------------------------------ sequence building
    def _prompt_segments(self, instruction: str, image_embeds: torch.Tensor) -> list:
        before, after = self.prompt.encode(instruction)
        return [(before, False), (image_embeds, False), (after, False)]

    def _format_ids(self, fields: Sequence[str]) -> List[int]:
        return [self.field_ids[name] for name in fields]

    def _assemble(self, samples: List[list]) -> SequenceBatch:
        param = self.slot_proj.weight
        return assemble_batch(samples, self.embed_tokens, self.hidden_size, param.device, param.dtype)

    def _slot_count(self, num_image_tokens: int) -> int:
        n = self.num_slots or num_image_tokens
        if n > num_image_tokens:
            raise ValueError(f"{n} slots but only {num_image_tokens} image tokens to bind them to")
        return n

    def _group_embeds(self, image_embeds: torch.Tensor, fields: Sequence[str]) -> torch.Tensor:
        """``[B, N, F, C]`` queries: format-token embedding + slot embedding of image token i."""
        num_slots = self._slot_count(image_embeds.shape[1])
        field_ids = torch.tensor(self._format_ids(fields), device=image_embeds.device)
        formats = self.embed_tokens(field_ids)  # [F, C]
        slots = self.slot_proj(image_embeds[:, :num_slots])  # [B, N, C]
        return slots.unsqueeze(2) + formats.view(1, 1, len(fields), -1)

    def _lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token CE over the full vocabulary at target positions only."""
        where = labels != -100
        logits = self.head(hidden[where])
        return F.cross_entropy(logits, labels[where])

    def _field_logits(self, group_hidden: torch.Tensor, num_categories: int,
                      class_context: Optional[torch.Tensor] = None,
                      class_prior: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``[N, n+1]`` (last = no-object) and location logits ``[N, F-1, bins]``
        of one image, computed over the allowed token subsets only.

        ``class_context [n, C]``: the prompt's hidden states at its ``<c0>..<c{n-1}>`` tokens
        (:meth:`_class_context`); with ``contextual_class_logits`` the class logit of ``<ci>``
        also gets the ``ClassPointer`` score between the slot and that state.
        ``class_prior [M, n]``: logits of each image token for each category (the image
        tokenizer's name alignment), added to the class logits of the slot bound to the token.
        """
        allowed = torch.cat([self.class_ids[:num_categories],
                             self.class_ids.new_tensor([self.no_object_id])])
        cls_logits = self.head.subset_logits(group_hidden[:, 0], allowed)
        extra = 0
        if self.class_pointer is not None and class_context is not None:
            extra = extra + self.class_pointer(group_hidden[:, 0], class_context)
        if class_prior is not None:
            extra = extra + class_prior[:group_hidden.shape[0]].to(cls_logits.dtype)
        if num_categories and torch.is_tensor(extra):
            cls_logits = torch.cat([cls_logits[:, :num_categories] + extra, cls_logits[:, num_categories:]], dim=1)
        loc_logits = self.head.subset_logits(group_hidden[:, 1:], self.location_ids)
        return cls_logits, loc_logits

    def _class_context(self, prefix_hidden: Optional[torch.Tensor], prefix: SequenceBatch, row: int,
                       num_categories: int) -> Optional[torch.Tensor]:
        """``[n, C]`` hidden states of the prompt at the first ``<c0>..<c{n-1}>`` tokens of row
        ``row`` (zeros for a class token the prompt does not contain); None when unused."""
        if self.class_pointer is None or prefix_hidden is None or prefix.input_ids is None:
            return None
        ids = prefix.input_ids[row]
        context = prefix_hidden.new_zeros(num_categories, prefix_hidden.shape[-1])
        for i in range(num_categories):
            where = (ids == self.class_ids[i]).nonzero()
            if len(where):
                context[i] = prefix_hidden[row, int(where[0])]
        return context

    def _run_groups(self, prefix: SequenceBatch, group_embeds: torch.Tensor,
                    mode: str) -> Tuple[torch.Tensor, torch.Tensor]:
        if mode == "autoregressive":
            return autoregressive_forward(self.backbone, prefix, group_embeds, self.groups_see_each_other,
                                          return_prefix=True)
        return parallel_forward(self.backbone, prefix, group_embeds, self.groups_see_each_other)

    # ------------------------------------------------------------------ training
    def loss(self, image_embeds: torch.Tensor, reference_points: torch.Tensor,
             data_samples: List, class_priors: Optional[List[Optional[torch.Tensor]]] = None,
             image_features: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """``class_priors``: per sample ``[M, n]`` token-to-category logits or None (see
        :meth:`_field_logits`); ``image_features``: what the box and polygon refinements read
        (see ``VisionLLM._image_features``), needed only with them."""
        losses: Dict[str, torch.Tensor] = {}
        structured: Dict[Tuple[str, ...], List[int]] = {}
        text: List[int] = []
        for i, sample in enumerate(data_samples):
            task = _meta(sample, "task")
            if task in STRUCTURED_TASKS:
                structured.setdefault(self._fields_of(sample), []).append(i)
            elif task in TEXT_TASKS:
                text.append(i)
            else:
                raise ValueError(f"unknown task {task!r}")
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
        for name, parts in terms.items():
            total = sum(w for _, w in parts)
            value = sum(v * w for v, w in parts) / max(total, 1e-12)
            losses[f"loss_{name}"] = value * self.loss_weights[name]
        return losses

    def _fields_of(self, sample) -> Tuple[str, ...]:
        fields = _meta(sample, "output_format")
        if fields:
            return tuple(fields)
        from visionllm.instructions import parse_output_format
        return parse_output_format(_meta(sample, "instruction")).fields

    def _structured_prefix(self, image_embeds, instructions: List[str], fields: Sequence[str]) -> SequenceBatch:
        format_ids = self._format_ids(fields) + [self.prompt.end_of_response_id]
        return self._assemble([self._prompt_segments(text, embeds) + [(format_ids, True)]
                               for text, embeds in zip(instructions, image_embeds)])

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

    def _structured_loss(self, image_embeds, reference_points, samples, fields, class_priors=None,
                         image_features=None):
        """Yield ``(name, loss, weight)`` for one sub-batch sharing an output format."""
        prefix = self._structured_prefix(image_embeds, [_meta(s, "instruction") for s in samples], fields)
        with self._reading(image_embeds):
            prefix_hidden, group_hidden = parallel_forward(
                self.backbone, prefix, self._group_embeds(image_embeds, fields), self.groups_see_each_other)
        yield "format", self._lm_loss(prefix_hidden, prefix.labels), float(len(samples))

        num_points = (len(fields) - 1) // 2
        cls_sum = cls_weight = loc_sum = l1_sum = giou_sum = None
        loc_count = matched_count = 0
        refine_l1 = refine_giou = None
        refine_count = 0
        refining = self._refinement_for(num_points) is not None
        for b, sample in enumerate(samples):
            categories = _meta(sample, "categories")
            if len(categories) > self.special.num_classes:
                raise ValueError(f"{len(categories)} categories exceed the {self.special.num_classes} class tokens")
            num_slots = group_hidden.shape[1]
            refs = reference_points[b, :num_slots].detach()
            h, w = _meta(sample, "img_shape")[:2]
            img_wh = (float(w), float(h))
            cls_logits, loc_logits = self._field_logits(
                group_hidden[b], len(categories), self._class_context(prefix_hidden, prefix, b, len(categories)),
                class_priors[b] if class_priors is not None else None)
            gt_points, gt_labels = self._gt_points(sample, num_points)
            gt_points, gt_labels = gt_points.to(refs.device), gt_labels.to(refs.device)
            slot_idx, gt_idx = self._match(cls_logits, loc_logits, refs, img_wh, gt_points, gt_labels)
            # Class CE: matched slots → their label, the rest → no-object with a small weight.
            targets = torch.full((num_slots,), len(categories), dtype=torch.long, device=refs.device)
            weights = torch.full((num_slots,), self.no_object_weight, device=refs.device)
            targets[slot_idx] = gt_labels[gt_idx]
            weights[slot_idx] = 1.0
            ce = F.cross_entropy(cls_logits, targets, reduction="none")
            cls_sum = (ce * weights).sum() if cls_sum is None else cls_sum + (ce * weights).sum()
            cls_weight = weights.sum() if cls_weight is None else cls_weight + weights.sum()
            if len(slot_idx):
                # Coordinate targets are offsets from the MATCHED slot's reference point.
                matched_refs = refs[slot_idx].unsqueeze(1)
                bins = self.codec.encode(gt_points[gt_idx], matched_refs, img_wh).flatten(1)
                matched_logits = loc_logits[slot_idx]
                loc_ce = F.cross_entropy(matched_logits.flatten(0, 1), bins.flatten(), reduction="sum")
                loc_sum = loc_ce if loc_sum is None else loc_sum + loc_ce
                size = matched_logits.new_tensor(img_wh)
                expected = self.codec.decode_expectation(
                    matched_logits.softmax(-1).view(len(slot_idx), -1, 2, self.special.num_bins), matched_refs, img_wh)
                l1 = ((expected - gt_points[gt_idx]) / size).abs().sum()
                l1_sum = l1 if l1_sum is None else l1_sum + l1
                loc_count += bins.numel()
                if self.loss_weights["giou"]:
                    giou = generalized_box_iou_loss(extent_boxes(expected), extent_boxes(gt_points[gt_idx]),
                                                    reduction="sum")
                    giou_sum = giou if giou_sum is None else giou_sum + giou
                    matched_count += len(slot_idx)
                if refining:
                    target = gt_points[gt_idx] / size
                    if num_points == 2:
                        target = extent_boxes(target).view(-1, 2, 2)
                    for step in self._refine(image_features, b, slot_idx, expected, img_wh):
                        refine_count += len(step)
                        if num_points == 2:
                            l1 = (step - target).abs().sum()
                            giou = generalized_box_iou_loss(step.flatten(1), target.flatten(1), reduction="sum")
                            refine_giou = giou if refine_giou is None else refine_giou + giou
                        else:
                            l1 = outline_distance(step, target).sum()
                        refine_l1 = l1 if refine_l1 is None else refine_l1 + l1
        yield "cls", cls_sum / cls_weight, float(cls_weight)
        if loc_count:
            yield "loc", loc_sum / loc_count, float(loc_count)
            yield "loc_l1", l1_sum / loc_count, float(loc_count)
            if matched_count:
                yield "giou", giou_sum / matched_count, float(matched_count)
            if refine_count and num_points == 2:
                yield "refine_l1", refine_l1 / (4 * refine_count), float(4 * refine_count)
                yield "refine_giou", refine_giou / refine_count, float(refine_count)
            elif refine_count:
                yield "refine_polygon", refine_l1 / refine_count, float(refine_count)
        else:  # keep the location rows in the graph so every step has the same terms
            for name in ("loc", "loc_l1") + (("giou",) if self.loss_weights["giou"] else ()):
                yield name, group_hidden.sum() * 0.0, 1.0

    def _gt_points(self, sample, num_points: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth points ``[G, K, 2]`` in field order, and labels ``[G]``."""
        gt = sample.gt_instances
        labels = gt.labels.long()
        if num_points == 2:
            return gt.bboxes.float().reshape(-1, 2, 2), labels
        polygons = gt.polygons.float()
        if polygons.shape[1] != num_points:
            raise ValueError(f"ground-truth polygons have {polygons.shape[1]} points, format asks {num_points}")
        return polygons, labels

    @torch.no_grad()
    def _match(self, cls_logits, loc_logits, refs, img_wh, gt_points, gt_labels):
        num_slots = cls_logits.shape[0]
        probs = loc_logits.softmax(-1).view(num_slots, -1, 2, self.special.num_bins)
        size = torch.tensor(img_wh, device=refs.device)
        expected = self.codec.decode_expectation(probs, refs.unsqueeze(1), img_wh) / size
        gt = gt_points / size
        return self.matcher(cls_logits.softmax(-1), gt_labels,
                            pred_coords=expected.flatten(1), gt_coords=gt.flatten(1))

    def _text_loss(self, image_embeds, samples) -> torch.Tensor:
        rows = []
        for embeds, sample in zip(image_embeds, samples):
            target = self.prompt.text_ids(_meta(sample, "target_text")) + [self.prompt.end_of_response_id]
            rows.append(self._prompt_segments(_meta(sample, "instruction"), embeds) + [(target, True)])
        batch = self._assemble(rows)
        with self._reading(image_embeds):
            hidden = self.backbone(inputs_embeds=batch.embeds,
                                   attention_mask=additive_mask(prefix_allowed(batch.valid), batch.embeds.dtype).unsqueeze(1),
                                   position_ids=batch.position_ids, use_cache=False).last_hidden_state
        return self._lm_loss(hidden, batch.labels)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, image_embeds: torch.Tensor, reference_points: torch.Tensor,
                data_samples: List, class_priors: Optional[List[Optional[torch.Tensor]]] = None,
                image_features: Optional[Dict[str, torch.Tensor]] = None) -> List:
        structured, text = [], []
        for i, sample in enumerate(data_samples):
            task = _meta(sample, "task")
            (structured if task in STRUCTURED_TASKS else text).append(i)
        if structured:
            self._predict_structured(image_embeds[structured], reference_points[structured],
                                     [data_samples[i] for i in structured],
                                     [class_priors[i] for i in structured] if class_priors is not None else None,
                                     self._features_of(image_features, structured))
        if text:
            texts = self.generate_text(image_embeds[text], [_meta(data_samples[i], "instruction") for i in text])
            for i, value in zip(text, texts):
                data_samples[i].pred_text = value
        return data_samples

    def generate_text(self, image_embeds: torch.Tensor, instructions: List[str],
                      max_new_tokens: Optional[int] = None, num_beams: Optional[int] = None) -> List[str]:
        """Caption / answer generation with the KV cache of HF ``generate`` (greedy or beam)."""
        batch = self._assemble([self._prompt_segments(t, e) for t, e in zip(instructions, image_embeds)])
        eos = self.prompt.end_of_response_id
        with self._reading(image_embeds):
            output = self.llm.generate(
                inputs_embeds=batch.embeds, attention_mask=batch.valid.long(),
                max_new_tokens=max_new_tokens or self.max_new_tokens, num_beams=num_beams or self.num_beams,
                do_sample=False, eos_token_id=eos, pad_token_id=eos,
                suppress_tokens=self.new_token_ids)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in output]

    def _decode_format(self, image_embeds: torch.Tensor, instructions: List[str]) -> List[Tuple[str, ...]]:
        """The output format of each instruction: the generated format tokens when they form a
        valid format, else the parser's reading of the instruction."""
        from visionllm.instructions import OutputFormat, parse_output_format
        generated = [None] * len(instructions)
        if self.generate_format:
            generated = self._generate_format(image_embeds, instructions)
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

    @torch.no_grad()
    def _generate_format(self, image_embeds: torch.Tensor, instructions: List[str]) -> List[Optional[List[int]]]:
        """Greedy generation of the format tokens under the format grammar, in ONE forward pass.

        A format is ``<cls> <x1> <y1> ... <xK> <yK>``, so the only choice at each step is "next
        field" or "end of response" (allowed after a complete point, K >= 2). Greedy decoding
        would feed exactly the tokens of the longest format up to where it stops, so feeding that
        sequence teacher-forced and comparing the two logits at every position gives the same
        result as step-by-step decoding without its per-token forward passes. ``None`` where the
        model never chooses to stop (the caller falls back to the parser).
        """
        from visionllm.instructions import OutputFormat
        ids = self._format_ids(OutputFormat.polygon(self.special.max_points).fields)
        batch = self._assemble([self._prompt_segments(t, e) + [(ids, False)]
                                for t, e in zip(instructions, image_embeds)])
        mask = additive_mask(prefix_allowed(batch.valid), batch.embeds.dtype).unsqueeze(1)
        with self._reading(image_embeds):
            hidden = self.backbone(inputs_embeds=batch.embeds, attention_mask=mask,
                                   position_ids=batch.position_ids).last_hidden_state
        count = len(ids)
        # Left padding: the format tokens are the last ``count`` positions of every row.
        choices = torch.tensor([self.prompt.end_of_response_id] + ids, device=hidden.device)
        logits = self.head.subset_logits(hidden[:, -count:], choices)  # [B, count, 1 + count]
        stop_logit = logits[:, :, 0]
        next_logit = torch.full_like(stop_logit, float("-inf"))
        next_logit[:, :-1] = logits[:, torch.arange(count - 1), torch.arange(2, count + 1)]
        # Position j has just read ids[j]; stopping is allowed after y_K (j = 2K, K >= 2).
        position = torch.arange(count, device=hidden.device)
        may_stop = (position >= 4) & (position % 2 == 0)
        stops = (stop_logit >= next_logit) & may_stop
        results: List[Optional[List[int]]] = []
        for row in stops:
            where = row.nonzero()
            results.append(ids[:int(where[0]) + 1] if len(where) else None)
        return results

    def _predict_structured(self, image_embeds, reference_points, samples, class_priors=None,
                            image_features=None) -> None:
        from visionllm.instructions import format_category_set, split_category_set
        # Expand category sets beyond the budget into passes: (sample index, instruction, names, offset).
        passes = []
        for i, sample in enumerate(samples):
            instruction, categories = _meta(sample, "instruction"), list(_meta(sample, "categories"))
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
        formats = self._decode_format(image_embeds[[p[0] for p in passes]], [p[1] for p in passes])
        results: Dict[int, List[dict]] = {}
        by_format: Dict[Tuple[str, ...], List[int]] = {}
        for k, fields in enumerate(formats):
            by_format.setdefault(tuple(fields), []).append(k)
        for fields, members in by_format.items():
            idx = [passes[k][0] for k in members]
            prefix = self._structured_prefix(image_embeds[idx], [passes[k][1] for k in members], fields)
            with self._reading(image_embeds[idx]):
                prefix_hidden, group_hidden = self._run_groups(
                    prefix, self._group_embeds(image_embeds[idx], fields), self.decode_mode)
            for row, k in enumerate(members):
                i, _, names, offset = passes[k]
                context = self._class_context(prefix_hidden, prefix, row, len(names))
                prior = None
                if class_priors is not None and class_priors[i] is not None:
                    prior = class_priors[i][:, offset:offset + len(names)]
                slots = self._decode_slots(group_hidden[row], reference_points[i], samples[i], len(names), offset,
                                           fields, context, prior)
                if image_features is not None and self._refinement_for(slots["points"].shape[1]) is not None:
                    slots["points"] = self._refined_points(image_features, i, slots["points"], samples[i])
                results.setdefault(i, []).append(slots)
        for i, sample in enumerate(samples):
            sample.pred_instances = self._merge(results[i], sample)

    def _decode_slots(self, group_hidden, refs, sample, num_categories, offset, fields, class_context=None,
                      class_prior=None) -> dict:
        num_slots = group_hidden.shape[0]
        refs = refs[:num_slots]
        cls_logits, loc_logits = self._field_logits(group_hidden, num_categories, class_context, class_prior)
        probs = cls_logits.softmax(-1)[:, :num_categories]
        scores, labels = probs.max(-1) if num_categories else (probs.new_zeros(num_slots), probs.new_zeros(num_slots, dtype=torch.long))
        if (self.grounding_score == "alignment" and _meta(sample, "task") == "grounding"
                and class_prior is not None and num_categories):
            scores, labels = class_prior[:num_slots, :num_categories].sigmoid().max(-1)
        h, w = _meta(sample, "img_shape")[:2]
        img_wh = (float(w), float(h))
        loc = loc_logits.view(num_slots, -1, 2, self.special.num_bins)
        if self.coord_decode == "argmax":
            points = self.codec.decode(loc.argmax(-1), refs.unsqueeze(1), img_wh)
        else:
            points = self.codec.decode_expectation(loc.softmax(-1), refs.unsqueeze(1), img_wh)
        return dict(scores=scores, labels=labels + offset, points=points.float())

    def _refined_points(self, features, row: int, points: torch.Tensor, sample) -> torch.Tensor:
        """Decoded points ``[N, K, 2]`` (pixels) of one image after their refinement."""
        h, w = _meta(sample, "img_shape")[:2]
        img_wh = (float(w), float(h))
        return self._refine(features, row, torch.arange(len(points)), points, img_wh)[-1] * points.new_tensor(img_wh)

    def _merge(self, parts: List[dict], sample) -> InstanceData:
        """Concatenate the passes of one image, keep the best, rescale to ``ori_shape``."""
        scores = torch.cat([p["scores"] for p in parts])
        labels = torch.cat([p["labels"] for p in parts])
        points = torch.cat([p["points"] for p in parts])
        task = _meta(sample, "task")
        order = scores.argsort(descending=True)
        if task == "grounding":
            order = order[:1]
        else:
            order = order[scores[order] >= self.score_thr][:self.max_per_img]
        scores, labels, points = scores[order], labels[order], points[order]
        w_scale, h_scale = _meta(sample, "scale_factor", (1.0, 1.0))[:2]
        ori_h, ori_w = _meta(sample, "ori_shape", _meta(sample, "img_shape"))[:2]
        points = points / points.new_tensor([w_scale, h_scale])
        points[..., 0] = points[..., 0].clamp(0, ori_w)
        points[..., 1] = points[..., 1].clamp(0, ori_h)
        result = InstanceData()
        # Corners are decoded as written; a box is their extent (also the box of a polygon).
        result.bboxes = extent_boxes(points) if len(points) else points.new_zeros(0, 4)
        result.scores = scores
        category_ids = _meta(sample, "category_ids")
        if category_ids is not None:
            result.labels = torch.as_tensor(category_ids, dtype=torch.long)[labels.cpu()].to(labels.device)
        else:
            result.labels = labels
        if points.shape[1] > 2:
            result.polygons = points
            result.masks = rasterize_polygons(points, (int(ori_h), int(ori_w)))
        return result


def rasterize_polygons(polygons: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """K-point polygons ``[n, K, 2]`` (pixels) → boolean masks ``[n, h, w]`` with pycocotools."""
    from pycocotools import mask as mask_utils
    h, w = shape
    masks = np.zeros((len(polygons), h, w), dtype=bool)
    for i, polygon in enumerate(polygons.detach().cpu().double().numpy()):
        rle = mask_utils.merge(mask_utils.frPyObjects([polygon.reshape(-1).tolist()], h, w))
        masks[i] = mask_utils.decode(rle).astype(bool)
    return torch.from_numpy(masks)
