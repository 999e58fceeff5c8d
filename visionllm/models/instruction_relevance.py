"""Image tokens that tell the LLM how well they match a caption or question instruction."""
from typing import List

import torch
from torch import nn

from visionllm.tasks import task_of_instruction
from visionllm.registry import MODELS


@MODELS.register_module()
class InstructionRelevance(nn.Module):
    """For captions and questions, add to each image token's LLM input a learned vector weighted
    by the sigmoid of the tokenizer's alignment of that token with the whole instruction
    (``ImageTokenizer.instruction_relevance``).

    The tokenizer's name alignment already finds the object a question names; without this the
    LLM has to re-find it by matching words to tokens through LoRA. Box tasks get nothing here:
    their class logits already receive the token-to-name alignment (the token class prior).

    Args:
        hidden_size: width of the LLM's input embeddings.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(hidden_size))

    def init_weights(self) -> None:
        """The vector starts at zero: the LLM's inputs are unchanged until it is trained."""
        if not self.embedding.is_meta:
            nn.init.zeros_(self.embedding)

    def forward(self, image_tokenizer: nn.Module, embeds: torch.Tensor, data_samples: List) -> torch.Tensor:
        """``[B, M, hidden_size]`` to add to the LLM inputs of the image tokens ``embeds [B, M, C]``
        (in the tokenizer's width): zero for samples of structured tasks."""
        rows = [i for i, sample in enumerate(data_samples) if not task_of_instruction(sample.instruction).structured]
        weights = embeds.new_zeros(embeds.shape[:2])
        if rows:
            logits = image_tokenizer.instruction_relevance(embeds[rows], [data_samples[i].instruction for i in rows])
            weights = weights.index_put((torch.tensor(rows, device=embeds.device),), logits.sigmoid().to(weights.dtype))
        return weights.unsqueeze(-1) * self.embedding
