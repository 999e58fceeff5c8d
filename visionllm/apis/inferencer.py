"""Inference API: ``VisionLLMInferencer(config, checkpoint)(image, instruction)``."""
import copy
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose

from visionllm.apis.inputs import ImageInput, InputError, load_image, original_size, parse_regions
from visionllm.engine.checkpoint import load_trained_checkpoint
from visionllm.instructions import IMAGE_PLACEHOLDER
from visionllm.instructions.regions import scale_regions
from visionllm.tasks import InstructionError, read_instruction
from visionllm.apis.understanding import check_instruction, understand_instruction

@dataclass
class VisionLLMResult:
    """What the model said about one image for one instruction.

    ``boxes`` are ``[n, 4]`` (x1, y1, x2, y2) in pixels of the input image; ``labels`` index
    ``categories`` (the instruction's own category list) and ``names`` spell them out.
    ``polygons`` ``[n, K, 2]`` and ``masks`` ``[n, H, W]`` are filled for segmentation,
    ``text`` for captioning and VQA, with ``text_probability`` (its probability under the
    decoding distribution) when the LLM generated it, None when it was composed from the model's
    other outputs; ``regions`` ``[R, 4]`` are the instruction's input regions
    (pixels of the input image, placeholder order), for a question about named objects answered
    through the model's own grounding (``question_grounding``) the grounded boxes it asked about,
    for a count question answered from its detections (``question_counting``) the boxes counted,
    for a caption composed from its detections (``caption_grounding`` with ``compose``) the boxes
    it lists, left to right, or None; ``region_names`` name the grounded, counted or listed boxes
    (as the question or caption says them), None for input regions.
    """

    task: str
    instruction: str
    image_size: tuple
    categories: List[str] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    polygons: Optional[np.ndarray] = None
    masks: Optional[np.ndarray] = None
    text: Optional[str] = None
    text_probability: Optional[float] = None
    regions: Optional[np.ndarray] = None
    region_names: Optional[List[str]] = None
    # How the instruction was understood (visionllm/apis/understanding.py): "explicit" (template
    # syntax), "model" (the model's canonical form ``canonical`` of the user's ``request``) or
    # "fallback" (canonical form unreadable: rule-based reading).
    understanding: str = "explicit"
    request: Optional[str] = None
    canonical: Optional[str] = None

    @property
    def names(self) -> List[str]:
        return [self.categories[i] for i in self.labels.tolist()]


def describe_instruction(text: str, history: Optional[Sequence[dict]] = None) -> dict:
    """Task, categories and output format of a free-form instruction (``read_instruction``),
    as the data-sample metainfo keys.

    ``history``: the earlier turns of a conversation (``[{"user", "assistant"}, ...]``, oldest
    first), whose first user turn holds ``<image>``; the instruction is then a follow-up without
    it. Raises :class:`InputError` (one line) for an instruction the model cannot follow.
    """
    if history:
        from visionllm.models.llm.prompt import check_turns
        try:
            history = check_turns(text, history)
        except ValueError as err:
            raise InputError(str(err)) from None
        return dict(describe_instruction(f"{IMAGE_PLACEHOLDER} {text}"), instruction=text, history=history)
    try:
        instruction = read_instruction(text)
    except InstructionError as err:
        raise InputError(str(err)) from None
    return dict(task=instruction.task, instruction=instruction.text, categories=list(instruction.categories),
                output_format=tuple(instruction.output_format.fields) if instruction.output_format else None)


# Test-pipeline steps that read files or build targets from annotations: an image given to the
# inferencer has neither, and the instruction comes from the caller.
_ANNOTATION_STEPS = ("LoadVisionLLMAnnotations", "ResamplePolygons", "BuildInstruction")


def inference_pipeline(cfg: Config) -> list:
    """The config's ``infer_pipeline``, or else its test pipeline without the loading and
    annotation steps (``Load*``, ``ResamplePolygons``, ``BuildInstruction``): what remains is
    the evaluation's resize (and any other image transform) and ``PackVisionLLMInputs``."""
    if cfg.get("infer_pipeline") is not None:
        return list(cfg.infer_pipeline)
    loader = cfg.get("test_dataloader") or {}
    dataset = loader.get("dataset") or {}
    while "datasets" in dataset or "dataset" in dataset:  # multi-task / wrapped: the first reader
        dataset = dataset["datasets"][0] if "datasets" in dataset else dataset["dataset"]
    pipeline = dataset.get("pipeline") or cfg.get("test_pipeline")
    if not pipeline:
        raise InputError("the config has neither an infer_pipeline nor a test pipeline to derive one from "
                         "(add infer_pipeline = [resize, PackVisionLLMInputs])")
    return [dict(step) for step in pipeline
            if not str(step["type"]).startswith("Load") and step["type"] not in _ANNOTATION_STEPS]


def check_request(image: ImageInput, instruction: str, regions: Optional[Sequence[Sequence[float]]] = None,
                  history: Optional[Sequence[dict]] = None) -> np.ndarray:
    """What a call would refuse, checked before any model runs (the API, the server and
    ``tools/infer.py`` refuse bad input at once): the instruction with its history
    (``check_instruction``) and the regions against ``image`` as given. Returns the regions as
    float32 ``[R, 4]``; raises :class:`InputError` (one line)."""
    check_instruction(instruction, history)
    return parse_regions(instruction, regions, original_size(image))


class VisionLLMInferencer:
    """Run a trained VisionLLM on images with plain-language instructions.

    Args:
        config: config path or :class:`mmengine.Config` of the model.
        checkpoint: path of a checkpoint written by ``tools/train.py`` (``None`` keeps the
            freshly built weights, which is only useful for tests).
        device: ``'cpu'`` (default) or a CUDA device.
    """

    def __init__(self, config: Union[str, Config], checkpoint: Optional[str] = None, device: str = "cpu"):
        import visionllm.datasets  # noqa: F401  registers the transforms
        import visionllm.models  # noqa: F401  registers the model parts
        from visionllm.registry import MODELS

        from mmengine.registry import DefaultScope

        if isinstance(config, (str, os.PathLike)) and not os.path.isfile(config):
            raise InputError(f"config file not found: {config}")
        if checkpoint is not None and not os.path.isfile(checkpoint):  # before the (slow) model build
            raise InputError(f"checkpoint not found: {checkpoint}")
        cfg = Config.fromfile(config) if isinstance(config, (str, os.PathLike)) else copy.deepcopy(config)
        self.cfg = cfg
        steps = inference_pipeline(cfg)  # before the (slow) model build: a config without one fails fast
        # Nested parts (e.g. the data preprocessor) are looked up in the default scope's registry.
        with DefaultScope.overwrite_default_scope("visionllm"):
            self.model = MODELS.build(cfg.model)
        # As the runner does before loading a checkpoint: the new parts get their starting values
        # (zero-initialised read-outs and refinements start as identities) when none is given.
        self.model.init_weights()
        if checkpoint is not None:
            load_trained_checkpoint(self.model, checkpoint)
        self.model.to(device).eval()
        self.device = device
        self._visualizer = None
        with DefaultScope.overwrite_default_scope("visionllm"):
            self.pipeline = Compose(steps)

    def _prepare(self, image: np.ndarray, size: tuple, description: dict, regions: Optional[np.ndarray] = None) -> dict:
        h, w = image.shape[:2]
        n = len(description["categories"])
        # A huge file is reduced while decoding; the scale factor maps predictions back to the
        # size of the image as given, and the regions (pixels of the image as given) forward.
        sx, sy = w / size[1], h / size[0]
        results = dict(img=image, img_id=0, img_path=None, ori_shape=tuple(size), img_shape=(h, w),
                       scale_factor=(sx, sy), category_ids=list(range(n)), **description)
        if regions is not None and len(regions):
            results["regions"] = scale_regions(regions, sx, sy)  # the pipeline's resize moves them on
        return self.pipeline(results)

    @torch.no_grad()
    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]], instruction: str,
                 batch_size: int = 4, regions: Optional[Sequence[Sequence[float]]] = None,
                 history: Optional[Sequence[dict]] = None,
                 score_threshold: Optional[float] = None) -> Union[VisionLLMResult, List[VisionLLMResult]]:
        """Answer ``instruction`` on one image (→ a result) or a list of them (→ a list).

        ``regions``: one box ``[x1, y1, x2, y2]`` in pixels of the input image per ``<region>``
        placeholder of the instruction, in order (the same boxes for every image of a list);
        they must lie inside each image and have positive area. ``history``: earlier turns of a
        conversation about the image(s) (see ``describe_instruction``;
        :class:`~visionllm.apis.conversation.Conversation` keeps them). A plain request (not in
        template syntax) is first rewritten by the model as a canonical form, read on the first
        image (``understand_instruction``). ``score_threshold``: return only the objects scoring
        at least this much (grounding keeps its one box); the model then decodes the coordinates
        of those objects only, which is faster. None keeps every slot's prediction.
        """
        if score_threshold is not None and not 0.0 <= float(score_threshold) <= 1.0:
            raise InputError(f"score_threshold must be in [0, 1], got {score_threshold}")
        single = not isinstance(images, (list, tuple))
        image_list = [images] if single else list(images)
        boxes = [check_request(img, instruction, regions, history) for img in image_list]
        understood = understand_instruction(self, image_list[0] if image_list else None, instruction, history)
        description = understood.description
        arrays = [load_image(img) for img in image_list]
        sizes = [original_size(img) for img in image_list]
        results: List[VisionLLMResult] = []
        for start in range(0, len(arrays), batch_size):
            stop = start + batch_size
            chunk = list(zip(arrays[start:stop], sizes[start:stop], boxes[start:stop]))
            inputs = self._model_inputs(chunk, description)
            if score_threshold is not None:
                for sample in inputs["data_samples"]:
                    sample.set_metainfo(dict(score_thr=float(score_threshold)))
            samples = self.model(**inputs, mode="predict")
            results.extend(self._to_result(s, description, size, regions) for s, (_, size, regions) in zip(samples, chunk))
        for result in results:
            understood.report(result)
        return results[0] if single else results

    def _model_inputs(self, chunk: Sequence[tuple], description: dict) -> dict:
        """``(image array, original size[, regions])`` tuples → the model's preprocessed batch."""
        packed = [self._prepare(*item[:2], description, *item[2:]) for item in chunk]
        data = dict(inputs=[p["inputs"] for p in packed], data_samples=[p["data_samples"] for p in packed])
        return self.model.data_preprocessor(data, False)

    @torch.no_grad()
    def image_tokens(self, image: ImageInput, instruction: str) -> dict:
        """The image tokenizer's output for one image under ``instruction``: ``embeds [M, C]``,
        ``llm_embeds [M, C_llm]`` (projected into the LLM's input space) and
        ``reference_points [M, 2]`` ((cx, cy) in [0, 1] of the image)."""
        outputs = self.model(**self._model_inputs([(load_image(image), original_size(image))],
                                                  describe_instruction(instruction)), mode="tensor")
        return {key: outputs[key][0] for key in ("embeds", "llm_embeds", "reference_points")}

    @staticmethod
    def _to_result(sample, description: dict, image_size: tuple,
                   regions: Optional[np.ndarray] = None) -> VisionLLMResult:
        result = VisionLLMResult(task=description["task"], instruction=description["instruction"],
                                 image_size=tuple(image_size), categories=list(description["categories"]),
                                 regions=regions if regions is not None and len(regions) else None)
        if "pred_instances" in sample:
            pred = sample.pred_instances
            result.boxes = pred.bboxes.detach().cpu().numpy().astype(np.float32).reshape(-1, 4)
            result.scores = pred.scores.detach().cpu().numpy().astype(np.float32)
            result.labels = pred.labels.detach().cpu().numpy().astype(np.int64)
            if "polygons" in pred:
                result.polygons = pred.polygons.detach().cpu().numpy()
            if "masks" in pred:
                masks = pred.masks
                result.masks = masks.detach().cpu().numpy().astype(bool) if torch.is_tensor(masks) else np.asarray(masks, bool)
        if "pred_text" in sample:
            result.text = sample.pred_text
        if "pred_text_probability" in sample:
            result.text_probability = float(sample.pred_text_probability)
        if result.regions is None and sample.metainfo.get("grounded_boxes") is not None:
            result.regions = np.asarray(sample.metainfo["grounded_boxes"], np.float32).reshape(-1, 4)
            names = sample.metainfo.get("grounded_names")
            result.region_names = None if names is None else [str(name) for name in names]
        return result

    @property
    def visualizer(self):
        """The inferencer's :class:`~visionllm.visualization.VisionLLMVisualizer` (from
        ``VISUALIZERS``; built on first use, one per inferencer)."""
        if self._visualizer is None:
            import visionllm.visualization  # noqa: F401  registers the visualizer
            from mmengine.registry import DefaultScope
            from visionllm.registry import VISUALIZERS

            with DefaultScope.overwrite_default_scope("visionllm"):
                self._visualizer = VISUALIZERS.build(dict(type="VisionLLMVisualizer",
                                                          name=f"visionllm_inferencer_{id(self)}"))
        return self._visualizer

    def visualize(self, image: ImageInput, result: VisionLLMResult, out_file: str) -> str:
        """Write a PNG of the image with the result's boxes, polygons and text; returns its path."""
        from PIL import Image

        picture = self.visualizer.draw_result(load_image(image), result)
        os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
        Image.fromarray(picture).save(out_file)
        return out_file
