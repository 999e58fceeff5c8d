"""Where one region lies from another, as the instruction asks it, added to the LLM's input.

"Is <region> left of <region>?" is answered by the order of the two boxes along one axis and by
which way the words ask. Both are known before the LLM reads anything: the order from the boxes,
the way from the words. Left to the LLM, the comparison has to be learned through its adapters
from one answer word per question, and a training flip that mirrors the image and turns "left"
into "right" makes the same image tokens answer both ways.

``RegionRelations`` does the comparison outside the LLM. For an instruction with two or more
``<region>`` placeholders it takes the sign of the last region's centre minus the first one's
along x and along y, and multiplies each by a side read from the words: ``side_x(q) =
tanh(G(q) - G(swap_left_right(q)))``, ``side_y(q) = tanh(G(q) - G(swap_top_bottom(q)))``, with
G(q) the sum over the instruction's text-encoder features of a small learned map. Built this
way, a side changes sign exactly when the words are mirrored and is 0 for words that name no
direction (the swap leaves them unchanged), so the fold holds under the training flip by
construction. A linear map of the two folded signs is added to the LLM input of the
instruction's last word (``referent_embeds``).

The side's last layer starts at zero, so the module adds exactly zero until it is trained:
adding it to a trained model changes no output, and instructions with fewer than two regions
never get a vector.
"""
from typing import List, Optional

import torch
from torch import nn

from visionllm.instructions.mirror_words import swap_left_right, swap_top_bottom
from visionllm.instructions.regions import count_regions, regions_of
from visionllm.instructions.words import word_spans
from visionllm.models.word_vectors import add_at_last_word
from visionllm.registry import MODELS


@MODELS.register_module()
class RegionRelations(nn.Module):
    """Puts on each sample whose instruction holds two or more ``<region>``s a vector at its last
    word (``referent_embeds [W, hidden_size]``, W = ``len(word_spans(instruction))``; added to
    the rows another part may have put there). Samples with fewer regions are left untouched.

    Args:
        hidden_size: width of the LLM's input embeddings.
        text_dims: width of the text encoder's features (``image_tokenizer.text_encoder``).
    """

    def __init__(self, hidden_size: int, text_dims: int):
        super().__init__()
        self.side = nn.Sequential(nn.Linear(text_dims, text_dims), nn.ReLU(), nn.Linear(text_dims, 2, bias=False))
        self.out = nn.Linear(2, hidden_size, bias=False)

    def init_weights(self) -> None:
        """The side's last layer at zero (the module adds exactly zero until trained); the output
        map random, so the side's first gradient is not zero."""
        if not self.out.weight.is_meta:
            nn.init.zeros_(self.side[-1].weight)
            nn.init.normal_(self.out.weight, std=0.02)

    def sides(self, text_encoder: nn.Module, instructions: List[str]) -> torch.Tensor:
        """``[N, 2]`` in (-1, 1): which way each instruction asks along x and along y, as training
        has taught it. Each changes sign exactly when its axis's words are swapped, and is 0
        when the swap leaves the instruction unchanged (no word of that axis)."""
        texts = [variant for text in instructions
                 for variant in (text, swap_left_right(text), swap_top_bottom(text))]
        with torch.no_grad():  # the text encoder is read, not trained, here
            features, padding = text_encoder(texts)
        weight = self.side[-1].weight
        valid = (~padding).unsqueeze(-1).to(weight.dtype)
        g = (self.side(features.to(weight.dtype)) * valid).sum(1).view(len(instructions), 3, 2)
        return torch.tanh(torch.stack([g[:, 0, 0] - g[:, 1, 0], g[:, 0, 1] - g[:, 2, 1]], dim=-1))

    def forward(self, image_tokenizer: nn.Module, data_samples: List, dtype: Optional[torch.dtype] = None) -> None:
        """Add the folded order to the samples' last-word vectors, in ``dtype`` (the LLM inputs')."""
        rows = [sample for sample in data_samples
                if count_regions(sample.instruction) >= 2 and word_spans(sample.instruction)]
        if not rows:
            return
        orders = []
        for sample in rows:
            boxes = regions_of(sample.metainfo.get("regions"), count_regions(sample.instruction))
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            orders.append((centres[-1] - centres[0]).sign())
        order = torch.stack(orders).to(self.out.weight)
        vectors = self.out(order * self.sides(image_tokenizer.text_encoder, [s.instruction for s in rows]))
        for sample, vector in zip(rows, vectors):
            add_at_last_word(sample, vector, dtype)
