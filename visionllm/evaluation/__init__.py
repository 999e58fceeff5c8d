"""Metrics of the tasks (registered in ``visionllm.registry.METRICS``)."""
from .canonical_form_metric import CanonicalFormMetric, score_canonical
from .caption_metric import CaptionMetric
from .coco_metric import VisionLLMCocoMetric
from .multi_task_metric import MultiTaskMetric
from .refcoco_metric import RefCocoMetric
from .region_answer_metric import RegionClassificationAccuracy, RegionVQAAccuracy
from .region_caption_metric import RegionCaptionMetric
from .vqa_metric import VQAAccuracy, normalize_answer, vqa_accuracy

__all__ = ["VisionLLMCocoMetric", "RefCocoMetric", "CaptionMetric", "VQAAccuracy", "MultiTaskMetric",
           "normalize_answer", "vqa_accuracy", "RegionCaptionMetric", "RegionVQAAccuracy",
           "RegionClassificationAccuracy", "CanonicalFormMetric", "score_canonical"]
