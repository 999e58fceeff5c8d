"""The VisionLLM model: language-guided image tokenizer → projection → LLM task decoder."""
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.model import BaseModel
from torch import nn
from visionllm.instructions import TEXT_TASKS
from visionllm.models.llm.embedding_scale import ScaledProjection
from visionllm.registry import MODELS


@MODELS.register_module()
class VisionLLM(BaseModel):
    """One model for detection, segmentation, grounding, captioning and VQA.

    The instruction of each sample (``data_sample.instruction``) conditions the image tokenizer
    (through the text encoder) and is the prompt of the LLM decoder, so the same weights serve
    every task; the task and its output format come from the instruction alone.

    Args:
        image_tokenizer: config of the ``ImageTokenizer`` (backbone, text encoder, fusion,
            deformable transformer) producing M image tokens with reference points.
        task_decoder: config of the ``LLMTaskDecoder``.
        tokenizer_loss_weight: weight of the tokenizer's auxiliary loss L_tok.
        freeze_image_tokenizer: stage 2 of the paper schedule trains the decoder only.
        token_class_prior: add each image token's name logits (the tokenizer's name alignment,
            trained by ``loss_tok_cls``) to the class logits of the slot bound to that token. The
            tokenizer sees which object a token covers; the LLM then only has to confirm it,
            instead of re-learning through LoRA which of the prompt's names the token's features
            match.
        instruction_relevance: for captions and questions, add to each image token's LLM input
            a learned vector (zero at the start) weighted by the sigmoid of the tokenizer's
            alignment of that token with the whole instruction (``instruction_relevance``). The
            tokenizer already finds the object a question names; without this flag the LLM has
            to re-find it by matching words to tokens through LoRA.
        pretrained_prefixes: module prefixes whose weights come from installed pretrained
            packages or local pretrained directories at build time (base LLM, text encoder);
            their frozen parameters and buffers are left out of checkpoints.
        frozen_dtype: ``'bfloat16'`` / ``'float16'`` holds the frozen parameters under
            ``pretrained_prefixes`` (the base LLM, a frozen text encoder) in that dtype: half the
            memory of the largest part of the model, and half the bytes DDP broadcasts. Every
            trainable tensor (LoRA, new token rows, tokenizer, heads) keeps float32 master
            weights, and the forward then runs under ``torch.autocast`` of that dtype (unless an
            autocast is already active), which casts at each matmul. None keeps float32.
    """

    def __init__(self, image_tokenizer: dict, task_decoder: dict,
                 data_preprocessor: Optional[dict] = None, tokenizer_loss_weight: float = 1.0,
                 freeze_image_tokenizer: bool = False, token_class_prior: bool = True,
                 instruction_relevance: bool = False,
                 pretrained_prefixes: Sequence[str] = (), frozen_dtype: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(type="VisionLLMDataPreprocessor"),
                         init_cfg=init_cfg)
        self.image_tokenizer = MODELS.build(image_tokenizer)
        task_decoder = dict(task_decoder)
        for refinement in ("box_refinement", "polygon_refinement"):
            if task_decoder.get(refinement) is not None:
                # the refinements read the tokenizer's memory: its width and levels come from there
                task_decoder[refinement] = dict(embed_dims=self.image_tokenizer.embed_dims,
                                                num_levels=self.image_tokenizer.backbone.num_levels,
                                                **task_decoder[refinement])
        self.task_decoder = MODELS.build(task_decoder)
        # Image tokens live in the tokenizer's width; the LLM reads them as input embeddings, so
        # they enter at the scale of its word embeddings.
        self.token_projection = ScaledProjection(self.image_tokenizer.embed_dims, self.task_decoder.hidden_size,
                                                 self.task_decoder.input_rms)
        self.relevance_embedding = (nn.Parameter(torch.zeros(self.task_decoder.hidden_size))
                                    if instruction_relevance else None)
        self.tokenizer_loss_weight = tokenizer_loss_weight
        self.token_class_prior = token_class_prior
        self.pretrained_prefixes = tuple(pretrained_prefixes)
        if freeze_image_tokenizer:
            for param in self.image_tokenizer.parameters():
                param.requires_grad_(False)
        self.frozen_dtype = None
        if frozen_dtype is not None:
            from visionllm.engine.precision import resolve_dtype
            self.frozen_dtype = resolve_dtype(frozen_dtype)
            self._cast_frozen_pretrained(self.frozen_dtype)

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
        texts = [sample.instruction for sample in data_samples]
        outputs = self.image_tokenizer(images, image_masks, texts)
        outputs["llm_embeds"] = self.token_projection(outputs["embeds"])
        if self.relevance_embedding is not None:
            outputs["llm_embeds"] = outputs["llm_embeds"] + self._relevance_inputs(outputs["embeds"], data_samples)
        outputs["class_priors"] = (self.image_tokenizer.token_name_logits(outputs, data_samples)
                                   if self.token_class_prior else None)
        return outputs

    def _relevance_inputs(self, embeds: torch.Tensor, data_samples: List) -> torch.Tensor:
        """``[B, M, C_llm]``: the relevance vector weighted per token (zero for box tasks, whose
        class logits already get the token-to-name alignment)."""
        rows = [i for i, sample in enumerate(data_samples) if sample.metainfo.get("task") in TEXT_TASKS]
        weights = embeds.new_zeros(embeds.shape[:2])
        if rows:
            logits = self.image_tokenizer.instruction_relevance(embeds[rows], [data_samples[i].instruction for i in rows])
            weights = weights.index_put((torch.tensor(rows, device=embeds.device),), logits.sigmoid())
        return weights.unsqueeze(-1) * self.relevance_embedding

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
            return [_in_float32(sample) for sample in samples]
        raise ValueError(f"unknown mode {mode!r}; expected 'tensor', 'loss' or 'predict'")

    def init_weights(self):
        # mmengine's init_weights walks every child that has one; Hugging Face models have one
        # that re-initialises (and re-ties) their weights, which would wipe the pretrained LLM
        # and text encoder. Mark those as initialised so only our own parts are initialised.
        for prefix in self.pretrained_prefixes:
            self.get_submodule(prefix).is_init = True
        super().init_weights()

    def frozen_pretrained_keys(self) -> List[str]:
        """State-dict keys that the build restores from pretrained files (not trained here)."""
        def under_prefix(key: str) -> bool:
            return any(key == p or key.startswith(p + ".") for p in self.pretrained_prefixes)

        # remove_duplicate=False: a tied table (input embedding = output head) has two names and
        # both must be left out.
        keys = [name for name, param in self.named_parameters(remove_duplicate=False)
                if under_prefix(name) and not param.requires_grad]
        keys += [name for name, _ in self.named_buffers(remove_duplicate=False) if under_prefix(name)]
        return keys


def _in_float32(sample):
    """Predictions made under autocast in float32, as numpy and the metrics expect them."""
    if "pred_instances" in sample:
        pred = sample.pred_instances
        for key in list(pred.keys()):
            value = pred.get(key)
            if torch.is_tensor(value) and value.is_floating_point() and value.dtype != torch.float32:
                pred.set_field(value.float(), key)
    return sample
