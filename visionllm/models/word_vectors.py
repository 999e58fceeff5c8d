"""Vectors the model's parts add to an instruction's words before the LLM reads them.

A sample's ``referent_embeds [W, hidden_size]`` holds one row per word of its instruction
(``word_spans``); the task decoder adds each row to the LLM input of that word. Several parts
may write there, so each adds to what is already on the sample.
"""
from typing import Optional

import torch

from visionllm.instructions.words import word_spans


def add_at_last_word(sample, vector: torch.Tensor, dtype: Optional[torch.dtype] = None) -> None:
    """Add ``vector [hidden_size]`` to the row of the last word of ``sample``'s instruction (every
    other row 0), in ``dtype`` when given."""
    words = vector.new_zeros(len(word_spans(sample.instruction)), vector.shape[-1])
    words[-1] = vector
    if dtype is not None:
        words = words.to(dtype)
    sample.referent_embeds = words + sample.referent_embeds if "referent_embeds" in sample else words
