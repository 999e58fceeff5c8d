"""Metrics of the tasks (registered in ``visionllm.registry.METRICS``)."""
from .canonical_form_metric import CanonicalFormMetric, score_canonical
from .caption_metric import CaptionMetric
from .coco_metric import VisionLLMCocoMetric
from .multi_task_metric import MultiTaskMetric
from .refcoco_metric import RefCocoMetric
from .vqa_metric import VQAAccuracy, normalize_answer, vqa_accuracy

__all__ = ["VisionLLMCocoMetric", "RefCocoMetric", "CaptionMetric", "VQAAccuracy", "MultiTaskMetric",
           "normalize_answer", "vqa_accuracy",
           "CanonicalFormMetric", "score_canonical"]
