"""BERT-family text encoder of the instruction, projected to the transformer width."""
from typing import Dict, List, Optional

import torch
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel

from visionllm.registry import MODELS
from visionllm.utils.embedded import minilm_dir


@MODELS.register_module()
class TextEncoder(nn.Module):
    """Hugging Face ``BertModel`` + its tokenizer from a local directory.

    Args:
        model_dir: directory with ``config.json``, weights and vocabulary; ``None`` = the
            embedded MiniLM-L6. A bert-base directory works the same way.
        embed_dims: output width (a linear projection + LayerNorm from the BERT width).
        trainable: train the BERT weights (the projection is always trainable).
        pretrained: load the weights; ``False`` builds the architecture from the directory's
            config (plus ``config_overrides``) with fresh weights, e.g. to count the parameters
            of a bert-base shaped encoder on the ``meta`` device.
        max_length: texts are truncated to this many tokens.
    """

    def __init__(self, model_dir: Optional[str] = None, embed_dims: int = 256, trainable: bool = False,
                 pretrained: bool = True, config_overrides: Optional[Dict] = None, max_length: int = 256):
        super().__init__()
        if model_dir is not None:
            from visionllm.models.llm.llm_loader import check_pretrained_dir
            check_pretrained_dir(model_dir, "text encoder directory", "config.json",
                                 "put the Hugging Face BERT directory (config.json, weights, vocab.txt) there or "
                                 "set model_dir=None for the embedded MiniLM")
        model_dir = model_dir or minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if pretrained and not config_overrides:
            self.bert = BertModel.from_pretrained(model_dir)
            # The pooler is never used; dropping it keeps every parameter reachable by the loss.
            self.bert.pooler = None
        else:
            config = BertConfig.from_pretrained(model_dir, **(config_overrides or {}))
            self.bert = BertModel(config, add_pooling_layer=False)
        self.text_dims = self.bert.config.hidden_size
        self.proj = nn.Linear(self.text_dims, embed_dims)
        self.norm = nn.LayerNorm(embed_dims)
        self.embed_dims = embed_dims
        self.max_length = max_length
        self.trainable = trainable
        if not trainable:
            self.bert.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.bert.eval()  # frozen encoder: no dropout
        return self

    def tokenize(self, texts: List[str], pad_to_length: Optional[int] = None) -> Dict[str, torch.Tensor]:
        padding = "max_length" if pad_to_length is not None else "longest"
        return self.tokenizer(list(texts), padding=padding, truncation=True,
                              max_length=pad_to_length or self.max_length, return_tensors="pt")

    def forward(self, texts: List[str], pad_to_length: Optional[int] = None):
        """Return ``(features [B, T, embed_dims], padding_mask [B, T] bool, True = padding)``."""
        tokens = self.tokenize(texts, pad_to_length)
        device = self.proj.weight.device
        input_ids = tokens["input_ids"].to(device)
        attention_mask = tokens["attention_mask"].to(device)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.norm(self.proj(hidden)), attention_mask == 0
