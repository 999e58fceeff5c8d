"""The LLM task decoder: extended vocabulary, LoRA, prompt assembly, parallel structured decoding."""
from .llm_loader import ALPACA_7B_CONFIG, apply_lora, keep_first_layers, load_causal_lm
from .parallel_decoding import autoregressive_forward, block_attention_mask, parallel_forward
from .prompt import PromptBuilder, SequenceBatch, assemble_batch
from .postprocess import rasterize_polygons
from .task_decoder import LLMTaskDecoder
from .vocabulary import ExtendedEmbedding, ExtendedLMHead, SpecialTokens, extend_vocabulary

__all__ = [
    "ALPACA_7B_CONFIG", "apply_lora", "keep_first_layers", "load_causal_lm", "autoregressive_forward",
    "block_attention_mask", "parallel_forward", "PromptBuilder", "SequenceBatch", "assemble_batch",
    "LLMTaskDecoder", "rasterize_polygons", "ExtendedEmbedding", "ExtendedLMHead", "SpecialTokens",
    "extend_vocabulary",
]
