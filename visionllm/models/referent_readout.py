"""What each word of a question or caption request refers to in the image, added to its LLM input.

The tokenizer's name alignment finds the object a phrase names (the structured tasks live on it),
but a text answer has to find it again inside the LLM, by matching the question's words to
image tokens through attention the LoRA adapters must learn from one answer word per sample.
"Is the red square left of the blue circle?" then needs two such look-ups and a comparison.

``ReferentReadout`` does the look-up with the alignment: for word t of the instruction, the
phrase ending at t (``word_phrases``) is aligned with every image token; the LLM input vectors and
the reference points of the tokens are pooled by the softmax of that alignment (what the
phrase's object is and where), each goes through a zero-initialised map (the point as sine
features first), the sum is scaled by how well the best token matches (the sigmoid of its
logit) and added to the LLM input of the word's own tokens. So "square" arrives carrying the red
square's features and position, and "circle" the blue circle's. The position gets a map of its
own because in the pooled token it is a small part of a vector about appearance: a map trained
from zero on the whole vector learns the appearance directions first.
"""
from typing import List

import torch
from torch import nn

from visionllm.instructions.words import word_phrases
from visionllm.models.image_tokenizer.positional_encoding import sine_point_features
from visionllm.registry import MODELS
from visionllm.tasks import task_of_instruction


@MODELS.register_module()
class ReferentReadout(nn.Module):
    """Puts on each caption / question sample ``referent_embeds [W, hidden_size]``: one vector per
    word of its instruction (``word_spans``), which the task decoder adds to the LLM input of
    that word's tokens. Samples of structured tasks get none.

    Args:
        hidden_size: width of the LLM's input embeddings.
        window: words per phrase (the word and the ones before it).
        num_feats / temperature: sine features per coordinate of the pooled point.
    """

    def __init__(self, hidden_size: int, window: int = 3, num_feats: int = 32, temperature: float = 20.0):
        super().__init__()
        self.window = window
        self.num_feats = num_feats
        self.temperature = temperature
        self.out = nn.Linear(hidden_size, hidden_size, bias=False)
        self.position = nn.Linear(2 * num_feats, hidden_size, bias=False)

    def init_weights(self) -> None:
        """Both maps start at zero: the LLM's inputs are unchanged until they are trained."""
        for layer in (self.out, self.position):
            if not layer.weight.is_meta:
                nn.init.zeros_(layer.weight)

    def forward(self, image_tokenizer: nn.Module, embeds: torch.Tensor, llm_embeds: torch.Tensor,
                reference_points: torch.Tensor, data_samples: List) -> None:
        """``embeds [B, M, C]``: image tokens in the tokenizer's width (aligned with the phrases);
        ``llm_embeds [B, M, hidden_size]``: the same tokens as the LLM reads them;
        ``reference_points [B, M, 2]``: where they are, (cx, cy) in [0, 1]."""
        rows, phrases = [], []
        for i, sample in enumerate(data_samples):
            if task_of_instruction(sample.instruction).structured:
                continue
            words = word_phrases(sample.instruction, self.window)
            if words:
                rows.append((i, len(phrases), len(words)))
                phrases += words
        if not rows:
            return
        names = image_tokenizer.name_embeddings(phrases)
        for i, start, count in rows:
            logits = image_tokenizer.name_logits(embeds[i], names[start:start + count])  # [M, W]
            weights = logits.softmax(dim=0).t().to(llm_embeds.dtype)  # [W, M]
            points = sine_point_features(weights @ reference_points[i].detach().to(weights.dtype), self.num_feats,
                                         self.temperature)
            match = logits.max(dim=0).values.sigmoid().unsqueeze(-1).to(weights.dtype)
            data_samples[i].referent_embeds = match * (self.out(weights @ llm_embeds[i])
                                                       + self.position(points.to(self.position.weight.dtype)))
