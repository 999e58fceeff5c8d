"""Loading the LLaMA-family causal LM of the task decoder, and LoRA adapters on it.

Sources: the embedded SmolLM2-135M-Instruct GGUF (default, no hub access needed), a local Hugging
Face directory (e.g. Alpaca-7B), or a config built on the ``meta`` device (paper-size models
whose parameter count and structure are checked without weights).
"""
import os
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

# Alpaca-7B is LLaMA-7B fine-tuned; these are its sizes (the paper configs' LLM).
ALPACA_7B_CONFIG = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=32, intermediate_size=11008, vocab_size=32000,
                        max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False)

LORA_ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


def load_tokenizer(path: str, gguf_file: Optional[str] = None):
    from transformers import AutoTokenizer
    kwargs = dict(gguf_file=gguf_file) if gguf_file else {}
    return AutoTokenizer.from_pretrained(path, **kwargs)


def load_causal_lm(source: str = "smollm2", gguf_file: Optional[str] = None,
                   tokenizer_path: Optional[str] = None, config: Optional[dict] = None,
                   num_layers: Optional[int] = None,
                   dtype: torch.dtype = torch.float32) -> Tuple[nn.Module, object]:
    """Return ``(model, tokenizer)``.

    Args:
        source: ``'smollm2'`` (the embedded GGUF, read through its cached conversion), ``'meta'``
            (built from ``config`` on the meta device, no weights), or a local directory (HF
            checkpoint, or a GGUF with ``gguf_file``).
        tokenizer_path: tokenizer directory when it differs from ``source`` (required for
            ``'meta'`` if a tokenizer is wanted; ``None`` there means no tokenizer).
        config: LlamaConfig keyword arguments for ``'meta'`` (defaults to Alpaca-7B sizes).
        num_layers: keep only the first k decoder layers (the CPU default model uses fewer).
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
    if source == "meta":
        llama_config = LlamaConfig(**(config or ALPACA_7B_CONFIG))
        if num_layers is not None:
            llama_config.num_hidden_layers = num_layers
        with torch.device("meta"):
            model = LlamaForCausalLM(llama_config)
        tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
        return model, tokenizer
    embedded = source == "smollm2"
    if embedded:
        # The GGUF converted once into a cached Hugging Face folder (see visionllm.utils.embedded).
        from visionllm.utils.embedded import smollm2_dir, smollm2_gguf_path
        source = smollm2_dir()
        if not source:
            path = smollm2_gguf_path()
            source, gguf_file = os.path.dirname(path), os.path.basename(path)
    check_pretrained_dir(source, "LLM directory", "config.json" if not gguf_file else gguf_file,
                         "put the Hugging Face LLaMA directory (config.json, weights, tokenizer) there or set "
                         "model.task_decoder.llm.source")
    kwargs = dict(gguf_file=gguf_file) if gguf_file else {}
    if num_layers is not None and not gguf_file and not embedded:
        # Building only k layers avoids materialising weights that would be dropped (the small
        # embedded model is read whole: its cut is then silent, with no unused-weights report).
        kwargs["num_hidden_layers"] = num_layers
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    if num_layers is not None:
        keep_first_layers(model, num_layers)
    tokenizer = load_tokenizer(tokenizer_path or source, None if tokenizer_path else gguf_file)
    return model, tokenizer


def check_pretrained_dir(path: str, what: str, required_file: str, fix: str) -> None:
    """Raise a one-line ``FileNotFoundError`` naming ``path`` and the fix when the directory (or
    its ``required_file``) is absent: there are no hub downloads at run time, and the loaders of
    ``transformers`` would otherwise take the path for a hub id and fail far from the cause."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path} ({fix}; no hub downloads here)")
    if required_file and not os.path.isfile(os.path.join(path, required_file)):
        raise FileNotFoundError(f"{what} {path} has no {required_file} ({fix})")


def keep_first_layers(model: nn.Module, num_layers: int) -> nn.Module:
    layers = model.model.layers
    if num_layers > len(layers):
        raise ValueError(f"cannot keep {num_layers} layers of a {len(layers)}-layer model")
    model.model.layers = nn.ModuleList(list(layers)[:num_layers])
    model.config.num_hidden_layers = num_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:num_layers]
    return model


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16, dropout: float = 0.05,
               include_mlp: bool = False,
               target_modules: Optional[Sequence[str]] = None) -> nn.Module:
    """Inject LoRA adapters (peft) into ``model`` in place and freeze everything else.

    Only the ``lora_`` parameters stay trainable; callers unfreeze their own extra parameters
    afterwards (the new vocabulary rows are added after this call).
    """
    from peft import LoraConfig, inject_adapter_in_model
    targets = list(target_modules or LORA_ATTENTION_MODULES)
    if include_mlp and target_modules is None:
        targets += list(LORA_MLP_MODULES)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        bias="none")
    model = inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return model


def freeze_all(model: nn.Module) -> nn.Module:
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def lora_parameter_count(hidden: int, num_layers: int, rank: int, intermediate: int = 0,
                         kv_dim: Optional[int] = None, include_mlp: bool = False) -> int:
    """Expected LoRA parameter count: each adapted ``Linear(i, o)`` adds ``rank * (i + o)``."""
    kv_dim = hidden if kv_dim is None else kv_dim
    per_layer = rank * (hidden + hidden) * 2 + rank * (hidden + kv_dim) * 2  # q, o ; k, v
    if include_mlp:
        per_layer += rank * (hidden + intermediate) * 3
    return per_layer * num_layers
