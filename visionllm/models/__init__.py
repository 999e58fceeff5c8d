"""Model side of VisionLLM: image tokenizer, LLM task decoder, matching, the full model."""
from . import matching  # noqa: F401  (registers HungarianMatcher in TASK_UTILS)
