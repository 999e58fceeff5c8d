"""The VisionLLM model: language-guided image tokenizer → projection → LLM task decoder."""
import logging
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModel

from visionllm.instructions.regions import count_regions, regions_of
from visionllm.models import instruction_relevance  # noqa: F401  (registers InstructionRelevance)
from visionllm.models import referent_readout  # noqa: F401  (registers ReferentReadout)
from visionllm.models import region_readout  # noqa: F401  (registers RegionReadout)
from visionllm.models import region_appearance  # noqa: F401  (registers RegionAppearance)
from visionllm.models import region_relations  # noqa: F401  (registers RegionRelations)
from visionllm.models.caption_grounding import build_caption_grounding
from visionllm.models.grounding_verification import build_grounding_verification
from visionllm.models.question_counting import build_question_counting
from visionllm.models.question_grounding import QuestionGrounding, build_question_grounding
from visionllm.models.components import build_optional
from visionllm.models.llm.embedding_scale import ScaledProjection
from visionllm.registry import MODELS


@MODELS.register_module()
class VisionLLM(BaseModel):
    """One model for detection, segmentation, grounding, captioning and VQA.

    The instruction of each sample (``data_sample.instruction``) conditions the image tokenizer
    (through the text encoder) and is the prompt of the LLM decoder, so the same weights serve
    every task; the task and its output format come from the instruction alone. A sample of a
    conversation also carries its earlier turns (metainfo ``history``): the LLM reads them in its
    prompt, the tokenizer their user turns (``conditioning_text``).

    Args:
        image_tokenizer: config of the ``ImageTokenizer`` (backbone, text encoder, fusion,
            deformable transformer) producing M image tokens with reference points.
        task_decoder: config of the ``LLMTaskDecoder``.
        tokenizer_loss_weight: weight of the tokenizer's auxiliary loss L_tok.
        freeze_image_tokenizer: stage 2 of the paper schedule trains the decoder only.
        instruction_relevance: registry config of the part that tells the LLM, for captions
            and questions, how well each image token matches the instruction
            (``InstructionRelevance``), or None.
        region_readout: registry config of the part that reads the tokenizer's memory inside each
            ``<region>`` box of an instruction (``RegionReadout``), or None: the regions are then
            written by their location tokens alone.
        pretrained_prefixes: module prefixes whose weights come from installed pretrained
            packages or local pretrained directories at build time (base LLM, text encoder);
            their frozen parameters and buffers are left out of checkpoints.
        frozen_dtype: ``'bfloat16'`` / ``'float16'`` holds the frozen parameters under
            ``pretrained_prefixes`` (the base LLM, a frozen text encoder) in that dtype: half the
            memory of the largest part of the model, and half the bytes DDP broadcasts. Every
            trainable tensor (LoRA, new token rows, tokenizer, heads) keeps float32 master
            weights, and the forward then runs under ``torch.autocast`` of that dtype (unless an
            autocast is already active), which casts at each matmul. None keeps float32.
        referent_readout: registry config of the part that adds to each word of a caption or
            question instruction the image tokens its phrase names (``ReferentReadout``), or None.
        region_relations: registry config of the part that gives an instruction with two or more
            ``<region>``s, at its last word, where its last region lies from its first, folded by
            which way the words ask (``RegionRelations``), or None.
        region_appearance: registry config of the part that gives an instruction with exactly one
            ``<region>``, at its last word, a map of the image token nearest that region
            (``RegionAppearance``), or None.
        caption_grounding: ``dict(categories, score_threshold=0.5)``: at inference a caption
            may not name a category the model does not detect in the image
            (``CaptionGrounding``: one detection pass per caption first); with
            ``compose=True, colours=(...)`` the caption lists the model's own detections, each
            with its "what colour is <region>?" answer (one more pass); or None.
        question_grounding: ``dict(tasks=("vqa",), colours=(), kinds=())``: at inference
            questions about named things are answered through the model's own grounding of the
            names (``QuestionGrounding``: one grounding pass for all names first): whether one
            lies left / right of, above / below another and what colour or shape one is, as the
            region question about the grounded boxes; which side of the image one is on, from its
            box; with ``colours`` and ``kinds``, "is there a <colour> <kind>?" from the colour and
            shape answers about its box (one more pass). None: every question as asked.
        question_counting: ``dict(categories, colours=(), score_threshold=0.5, overlap_iou=None)``:
            at inference "how many (<colour>) <kinds> are there?" is answered with the number of
            the model's own detections of the kind (``QuestionCounting``: one detection pass
            first; for a colour, one more pass asking each detection's colour), or None.
        grounding_verification: ``dict(categories, colours, score_threshold=0.5)``: at inference
            a grounding whose expression names a colour is checked with the region colour (and
            shape) answers about its box and, when they disagree, replaced by the best detection
            of the expression's kind with that colour answer; one naming an extreme of its kind
            ("the leftmost star", "the big star") becomes the detection of the kind furthest
            that way, and one relating it to an anchor ("the star left of the red square") the
            best detection of the kind beyond the anchor's own grounding that way
            (``GroundingVerification``: up to four more passes), or None.

    The token class prior is part of the architecture: each image token's name logits (the
    tokenizer's name alignment, trained by ``loss_tok_cls``) are added to the class logits of the
    slot bound to that token. The tokenizer sees which object a token covers; the LLM then only
    has to confirm it, instead of re-learning through LoRA which of the prompt's names the
    token's features match.
    """

    def __init__(self, image_tokenizer: dict, task_decoder: dict,
                 data_preprocessor: Optional[dict] = None, tokenizer_loss_weight: float = 1.0,
                 freeze_image_tokenizer: bool = False,
                 instruction_relevance: Optional[dict] = dict(type="InstructionRelevance"),  # noqa: B006
                 region_readout: Optional[dict] = dict(type="RegionReadout"),  # noqa: B006
                 referent_readout: Optional[dict] = None, region_relations: Optional[dict] = None,
                 region_appearance: Optional[dict] = None,
                 pretrained_prefixes: Sequence[str] = (), frozen_dtype: Optional[str] = None,
                 caption_grounding: Optional[dict] = None, question_grounding: Optional[dict] = None,
                 question_counting: Optional[dict] = None, grounding_verification: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(type="VisionLLMDataPreprocessor"),
                         init_cfg=init_cfg)
        self.image_tokenizer = MODELS.build(image_tokenizer)
        # the decoder's refinements read the tokenizer's memory: its width and levels come from there
        self.task_decoder = MODELS.build(task_decoder, default_args=dict(
            image_dims=self.image_tokenizer.embed_dims, image_levels=self.image_tokenizer.backbone.num_levels))
        # Image tokens live in the tokenizer's width; the LLM reads them as input embeddings, so
        # they enter at the scale of its word embeddings.
        self.token_projection = ScaledProjection(self.image_tokenizer.embed_dims, self.task_decoder.hidden_size,
                                                 self.task_decoder.input_rms)
        self.instruction_relevance = build_optional(instruction_relevance, hidden_size=self.task_decoder.hidden_size)
        self.region_readout = build_optional(region_readout, embed_dims=self.image_tokenizer.embed_dims,
                                             hidden_size=self.task_decoder.hidden_size)
        self.referent_readout = build_optional(referent_readout, hidden_size=self.task_decoder.hidden_size)
        self.region_relations = build_optional(region_relations, hidden_size=self.task_decoder.hidden_size,
                                               text_dims=self.image_tokenizer.text_encoder.embed_dims)
        self.region_appearance = build_optional(region_appearance, embed_dims=self.image_tokenizer.embed_dims,
                                                hidden_size=self.task_decoder.hidden_size)
        self.caption_grounding = build_caption_grounding(caption_grounding)
        self.question_grounding = build_question_grounding(question_grounding)
        self.question_counting = build_question_counting(question_counting)
        self.grounding_verification = build_grounding_verification(grounding_verification)
        self.tokenizer_loss_weight = tokenizer_loss_weight
        self.pretrained_prefixes = tuple(pretrained_prefixes)
        if freeze_image_tokenizer:
            for param in self.image_tokenizer.parameters():
                param.requires_grad_(False)
        self.frozen_dtype = None
        if frozen_dtype is not None:
            from visionllm.engine.precision import resolve_dtype
            self.frozen_dtype = resolve_dtype(frozen_dtype)
            self._cast_frozen_pretrained(self.frozen_dtype)
        # Frozen at build time = restored from the packages at build time; a training phase that
        # later freezes trained weights (RequestAdapterPhaseHook) must not drop them from checkpoints.
        self._frozen_at_build = frozenset(name for name, param in self.named_parameters(remove_duplicate=False)
                                          if not param.requires_grad)

    def _cast_frozen_pretrained(self, dtype: torch.dtype) -> None:
        """Store the frozen floating-point parameters under ``pretrained_prefixes`` in ``dtype``
        (trainable ones, e.g. LoRA inside the LLM, are left in float32)."""
        for prefix in self.pretrained_prefixes:
            for param in self.get_submodule(prefix).parameters():
                if not param.requires_grad and param.is_floating_point():
                    param.data = param.data.to(dtype)

    def _precision_context(self, images: torch.Tensor):
        """Autocast in ``frozen_dtype`` when the frozen base is held in it and no autocast of the
        device is active yet (e.g. a plain ``OptimWrapper`` or ``tools/test.py``)."""
        if self.frozen_dtype is None or torch.is_autocast_enabled(images.device.type):
            return nullcontext()
        return torch.autocast(images.device.type, dtype=self.frozen_dtype)

    def _tokenize(self, images: torch.Tensor, image_masks: torch.Tensor, data_samples: List) -> dict:
        texts = [conditioning_text(sample) for sample in data_samples]
        outputs = self.image_tokenizer(images, image_masks, texts)
        outputs["llm_embeds"] = self.token_projection(outputs["embeds"])
        if self.instruction_relevance is not None:
            outputs["llm_embeds"] = outputs["llm_embeds"] + self.instruction_relevance(
                self.image_tokenizer, outputs["embeds"], data_samples)
        outputs["class_priors"] = self.image_tokenizer.token_name_logits(outputs, data_samples)
        _drop_decoder_inputs(data_samples)  # vectors of an earlier pass over the same samples are stale
        if self.region_readout is not None:
            self._read_regions(outputs["memory_features"], data_samples)
        if self.referent_readout is not None:
            self.referent_readout(self.image_tokenizer, outputs["embeds"], outputs["llm_embeds"],
                                  outputs["reference_points"], data_samples)
        if self.region_relations is not None:
            self.region_relations(self.image_tokenizer, data_samples, outputs["llm_embeds"].dtype)
        if self.region_appearance is not None:
            self.region_appearance(outputs["embeds"], outputs["reference_points"], data_samples,
                                   outputs["llm_embeds"].dtype)
        return outputs

    def _read_regions(self, memory_features: dict, data_samples: List) -> None:
        """Put on each sample with ``<region>`` placeholders the read-out vectors of its regions
        (``region_embeds [R, hidden]``), which the task decoder adds to the regions' location
        tokens in the prompt."""
        boxes = []
        for sample in data_samples:
            regions = regions_of(sample.metainfo.get("regions"), count_regions(sample.instruction))
            h, w = sample.metainfo["img_shape"][:2]
            boxes.append(regions / regions.new_tensor([w, h, w, h]))
        if not any(len(b) for b in boxes):
            return
        for sample, vectors in zip(data_samples, self.region_readout(memory_features, boxes)):
            if len(vectors):
                sample.region_embeds = vectors

    @staticmethod
    def _image_features(outputs: dict) -> dict:
        """What the decoder's box refinement reads: the image tokens (in the tokenizer's width)
        and the encoder memory."""
        return dict(tokens=outputs["embeds"], **outputs["memory_features"])

    def forward(self, inputs: Dict[str, torch.Tensor], data_samples: Optional[List] = None,
                mode: str = "tensor") -> Union[Dict[str, torch.Tensor], List, dict]:
        if data_samples is None:
            raise ValueError("VisionLLM needs data samples: the instruction is part of the input")
        with self._precision_context(inputs["images"]):
            return self._forward(inputs, data_samples, mode)

    def _forward(self, inputs: Dict[str, torch.Tensor], data_samples: List, mode: str):
        if mode == "predict" and self.caption_grounding is not None:
            self._ground_captions(inputs, data_samples)
        if mode == "predict" and self.question_grounding is not None:
            self._ground_questions(inputs, data_samples)
        if mode == "predict" and self.question_counting is not None:
            self._count_questions(inputs, data_samples)
        outputs = self._tokenize(inputs["images"], inputs["image_masks"], data_samples)
        if mode == "tensor":
            return outputs
        if mode == "loss":
            losses = self.task_decoder.loss(outputs["llm_embeds"], outputs["reference_points"], data_samples,
                                            outputs["class_priors"], self._image_features(outputs))
            token_losses = self.image_tokenizer.loss(outputs, data_samples)
            for name, value in token_losses.items():
                # Weight loss terms only; mmengine logs every key that contains 'loss'.
                losses[name] = value * self.tokenizer_loss_weight if "loss" in name else value
            return losses
        if mode == "predict":
            samples = self.task_decoder.predict(outputs["llm_embeds"], outputs["reference_points"], data_samples,
                                                outputs["class_priors"], self._image_features(outputs))
            _drop_decoder_inputs(samples)  # inputs of the decoder, not predictions
            if self.grounding_verification is not None:
                self._verify_groundings(inputs, samples)
            for sample in samples:
                QuestionGrounding.restore(sample)  # asked instructions and composed answers
            return [_in_float32(sample) for sample in samples]
        raise ValueError(f"unknown mode {mode!r}; expected 'tensor', 'loss' or 'predict'")

    def _predict_groups(self, inputs: Dict[str, torch.Tensor], groups: List[Tuple[int, List]]) -> List[List]:
        """Predict, in one pass, each group's samples on the image of the group's batch row
        (``groups``: ``(row, samples)``); the predicted samples, grouped alike."""
        index = [row for row, samples in groups for _ in samples]
        if not index:
            return [[] for _ in groups]
        predicted = self._forward({key: value[index] for key, value in inputs.items()},
                                  [sample for _, samples in groups for sample in samples], "predict")
        grouped, start = [], 0
        for _, samples in groups:
            grouped.append(predicted[start:start + len(samples)])
            start += len(samples)
        return grouped

    def _ground_captions(self, inputs: Dict[str, torch.Tensor], data_samples: List) -> None:
        """Detect ``caption_grounding.categories`` in the images of the caption samples and put
        on each the words its caption may not write (metainfo ``banned_words``), or, to compose
        the caption, ask each present detection's colour (one more pass) and write the caption
        from them (``CaptionGrounding``)."""
        grounding = self.caption_grounding
        rows = grounding.rows(data_samples)
        detections = self._predict_groups(inputs, [(i, [grounding.detection_sample(data_samples[i])]) for i in rows])
        if not grounding.compose:
            for i, [detected] in zip(rows, detections):
                data_samples[i].set_metainfo(dict(banned_words=grounding.absent_words(detected)))
            return
        asked = [(i, grounding.colour_questions(data_samples[i], detected)) for i, [detected] in zip(rows, detections)]
        for i, answers in zip(rows, self._predict_groups(inputs, asked)):
            grounding.write(data_samples[i], answers)

    def _ground_questions(self, inputs: Dict[str, torch.Tensor], data_samples: List) -> None:
        """Ground the names of each question about named objects, then make it the region question
        about their boxes, or answer its region checks (one more pass) and compose its answer
        (``QuestionGrounding``)."""
        grounding = self.question_grounding
        rows = grounding.rows(data_samples)
        grounded = self._predict_groups(inputs, [(i, [grounding.grounding_sample(data_samples[i], name)
                                                      for name in question.names]) for i, question in rows])
        checks = [(i, question, grounding.region_question(data_samples[i], question, found))
                  for (i, question), found in zip(rows, grounded)]
        checks = [(i, question, asked) for i, question, asked in checks if asked]
        answered = self._predict_groups(inputs, [(i, asked) for i, _, asked in checks])
        for (i, question, _), answers in zip(checks, answered):
            grounding.compose(data_samples[i], question, answers)

    def _count_questions(self, inputs: Dict[str, torch.Tensor], data_samples: List) -> None:
        """Answer each count question with the number of the model's own detections of what it
        counts; for a colour, after asking each detection's colour (``QuestionCounting``)."""
        counting = self.question_counting
        rows = counting.rows(data_samples)
        detections = self._predict_groups(inputs, [(i, [counting.detection_sample(data_samples[i])]) for i, _ in rows])
        colours = [(i, question, counting.count(data_samples[i], question, detected))
                   for (i, question), [detected] in zip(rows, detections)]
        colours = [(i, question, asked) for i, question, asked in colours if asked]
        answered = self._predict_groups(inputs, [(i, asked) for i, _, asked in colours])
        for (i, question, _), answers in zip(colours, answered):
            counting.count_colours(data_samples[i], question, answers)

    def _verify_groundings(self, inputs: Dict[str, torch.Tensor], predicted: List) -> None:
        """Check each predicted grounding whose expression names a colour with the region answers
        about its box; replace one that disagrees by a detection that agrees
        (``GroundingVerification``)."""
        verification = self.grounding_verification
        rows = verification.rows(predicted)
        checked = self._predict_groups(inputs, [(i, verification.checks(predicted[i], words)) for i, words in rows])
        failed = [(i, words) for (i, words), answers in zip(rows, checked) if not verification.agrees(answers, words)]
        anchors = self._predict_groups(inputs, [(i, verification.anchor_groundings(predicted[i], words))
                                                for i, words in failed])
        detections = self._predict_groups(inputs, [(i, [verification.detection_sample(predicted[i])])
                                                   for i, _ in failed])
        candidates = [(i, words, *verification.candidates(predicted[i], detected, words, anchor))
                      for (i, words), [detected], anchor in zip(failed, detections, anchors)]
        answered = self._predict_groups(inputs, [(i, asked) for i, _, _, asked in candidates])
        for (i, words, chosen, _), answers in zip(candidates, answered):
            verification.replace(predicted[i], chosen, answers, words)

    def init_weights(self):
        # mmengine's init_weights walks every child that has one; Hugging Face models have one
        # that re-initialises (and re-ties) their weights, which would wipe the pretrained LLM
        # and text encoder. Mark those as initialised so only our own parts are initialised.
        for prefix in self.pretrained_prefixes:
            self.get_submodule(prefix).is_init = True
        super().init_weights()

    def _dump_init_info(self):
        # mmengine logs how every parameter was initialised: into the runner's log file, or, when
        # there is none (the inference API, scripts), as one console line per parameter. Keep
        # only the former.
        logger = MMLogger.get_current_instance()
        if any(isinstance(handler, logging.FileHandler) for handler in logger.handlers):
            super()._dump_init_info()

    def frozen_pretrained_keys(self) -> List[str]:
        """State-dict keys that the build restores from pretrained files (not trained here)."""
        def under_prefix(key: str) -> bool:
            return any(key == p or key.startswith(p + ".") for p in self.pretrained_prefixes)

        # remove_duplicate=False: a tied table (input embedding = output head) has two names and
        # both must be left out.
        from visionllm.engine.checkpoint import unwrapped_key  # names under FSDP units carry wrapper parts
        keys = [name for name, _ in self.named_parameters(remove_duplicate=False)
                if under_prefix(name) and unwrapped_key(name) in self._frozen_at_build]
        keys += [name for name, _ in self.named_buffers(remove_duplicate=False) if under_prefix(name)]
        return keys


def conditioning_text(sample) -> str:
    """What the image tokenizer reads for a sample: its instruction, then the user turns of its
    conversation (metainfo ``history``) from the newest back.

    A follow-up ("and how many of them are red?") names its objects only through earlier turns;
    the tokenizer places its tokens by the text, so it reads those turns too. Assistant answers
    are left out (coordinates and the model's own words, not a request). The current turn comes
    first, so the text encoder's truncation drops the oldest turns.
    """
    history = sample.metainfo.get("history") or []
    return " ".join([sample.instruction] + [turn["user"] for turn in reversed(history)])


def _drop_decoder_inputs(samples) -> None:
    """Remove the vectors the model put on samples for its task decoder (regions, referents)."""
    for sample in samples:
        for key in ("region_embeds", "referent_embeds"):
            if key in sample:
                delattr(sample, key)


def _in_float32(sample):
    """Predictions made under autocast in float32, as numpy and the metrics expect them."""
    if "pred_instances" in sample:
        pred = sample.pred_instances
        for key in list(pred.keys()):
            value = pred.get(key)
            if torch.is_tensor(value) and value.is_floating_point() and value.dtype != torch.float32:
                pred.set_field(value.float(), key)
    return sample
