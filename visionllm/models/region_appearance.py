"""What a pointed-at region looks like, put where the LLM writes its answer.

"What colour is <region>?" and "Describe <region>." need the appearance inside one box. The
region read-out (``RegionReadout``) pools the tokenizer's encoder memory at the box and adds it to
the region's location tokens in the prompt, but the answer is written several positions later: the
LLM has to route what it needs from there to the answer through attention in its adapters,
learned from one answer word per question. The image tokens, in contrast, are what the tokenizer
trains to describe objects, and a linear probe reads an object's colour from the token nearest it.

``RegionAppearance`` gives the answer position that token directly: for an instruction with
exactly one ``<region>``, a small map of the image token whose reference point lies nearest the
region's centre is added to the LLM input of the instruction's last word (``referent_embeds``),
the position whose output is the answer's first word. Instructions with two or more regions
compare them (``RegionRelations``) and get no appearance vector; instructions without regions are
never reached.

The map's last layer starts at zero, so the module adds exactly zero until trained: adding it to a
trained model changes no output.
"""
from typing import List, Optional

import torch
from torch import nn

from visionllm.instructions.regions import count_regions, regions_of
from visionllm.instructions.words import word_spans
from visionllm.models.word_vectors import add_at_last_word
from visionllm.registry import MODELS


@MODELS.register_module()
class RegionAppearance(nn.Module):
    """Puts on each sample whose instruction holds exactly one ``<region>`` a vector at its last word
    (``referent_embeds [W, hidden_size]``, W = ``len(word_spans(instruction))``; added to the rows
    another part may have put there). Other samples are left untouched.

    Args:
        embed_dims: width of the image tokens (the tokenizer's).
        hidden_size: width of the LLM's input embeddings.
        mid_dims: width of the map's hidden layer.
    """

    def __init__(self, embed_dims: int, hidden_size: int, mid_dims: int = 128):
        super().__init__()
        self.map = nn.Sequential(nn.Linear(embed_dims, mid_dims), nn.ReLU(),
                                 nn.Linear(mid_dims, hidden_size, bias=False))
        self.init_weights()  # zero from the start: a checkpoint without the part loads as the model without it

    def init_weights(self) -> None:
        """The map's last layer at zero (the module adds exactly zero until trained); its first
        layer keeps PyTorch's default, so the first gradient of the last layer is not zero."""
        if not self.map[-1].weight.is_meta:
            nn.init.zeros_(self.map[-1].weight)

    @staticmethod
    def nearest_tokens(reference_points: torch.Tensor, data_samples: List, rows: List[int]) -> torch.Tensor:
        """Index of the image token nearest the centre of each row's region: ``reference_points
        [B, M, 2]`` are ``(cx, cy)`` in [0, 1] of the image, the regions pixels of ``img_shape``."""
        centres = []
        for i in rows:
            box = regions_of(data_samples[i].metainfo.get("regions"), 1)[0]
            h, w = data_samples[i].metainfo["img_shape"][:2]
            centres.append(torch.stack([(box[0] + box[2]) / (2 * w), (box[1] + box[3]) / (2 * h)]))
        centres = torch.stack(centres).to(reference_points)
        return (reference_points[rows] - centres[:, None]).pow(2).sum(-1).argmin(-1)

    def forward(self, image_tokens: torch.Tensor, reference_points: torch.Tensor, data_samples: List,
                dtype: Optional[torch.dtype] = None) -> None:
        """Add the mapped nearest token of each one-region sample to its last-word vector, in
        ``dtype`` (the LLM inputs'). ``image_tokens [B, M, embed_dims]``."""
        rows = [i for i, sample in enumerate(data_samples)
                if count_regions(sample.instruction) == 1 and word_spans(sample.instruction)]
        if not rows:
            return
        nearest = self.nearest_tokens(reference_points, data_samples, rows)
        weight = self.map[0].weight
        vectors = self.map(image_tokens[rows, nearest].to(weight.dtype))
        for i, vector in zip(rows, vectors):
            add_at_last_word(data_samples[i], vector, dtype)
