"""Model side of VisionLLM: image tokenizer, LLM task decoder, matching, the full model."""
from . import matching  # noqa: F401  (registers HungarianMatcher in TASK_UTILS)
from .data_preprocessor import VisionLLMDataPreprocessor
from .image_tokenizer import ImageTokenizer
from .llm import LLMTaskDecoder
from .visionllm import VisionLLM

__all__ = ["VisionLLMDataPreprocessor", "ImageTokenizer", "LLMTaskDecoder", "VisionLLM"]
