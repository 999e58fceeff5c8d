"""Token-to-name alignment that lets the tokens compare with each other before they score a name."""
from typing import Optional

import torch
from torch import nn

from visionllm.registry import MODELS

from .positional_encoding import sine_point_features


@MODELS.register_module()
class RelationalAlignment(nn.Module):
    """Refine each token's name logit by looking at the other tokens' positions and logits.

    The plain alignment scores every token against a name on its own, which cannot work for
    relative expressions: "the square on the left" is the left one *of the squares*, a fact about
    the other tokens.
    For each name, every token gets its features, the name, its reference point, its plain
    logit and where the other candidates lie: the probability mass (sigmoid of the plain logits)
    of the other tokens to its left, right, above and below (soft comparisons of the reference
    points), as MAttNet encodes offsets to same-category objects. Self-attention over the
    image's tokens then lets a token compare further. A zero-initialised output adds the
    correction to the plain logit, so a trained model is unchanged until this is trained.
    The side weights give the comparisons a direct path besides the self-attention, which
    learns left / right slowly on its own (docs/experiments.md).

    Args:
        embed_dims: width of the tokens and of the name embeddings.
        num_layers / num_heads / ffn_dims: the self-attention stack over the tokens.
        num_point_feats: sine frequencies per coordinate of the reference-point encoding.
        side_temperature: softness (in image fractions) of the left / right / above / below
            comparisons of reference points.
    """

    def __init__(self, embed_dims: int, num_layers: int = 2, num_heads: int = 4, ffn_dims: int = 256,
                 num_point_feats: int = 16, side_temperature: float = 0.02):
        super().__init__()
        self.num_point_feats = num_point_feats
        self.side_temperature = side_temperature
        self.token_proj = nn.Sequential(nn.LayerNorm(embed_dims), nn.Linear(embed_dims, embed_dims))
        self.name_proj = nn.Linear(embed_dims, embed_dims)
        self.point_proj = nn.Linear(2 * num_point_feats, embed_dims)
        # The plain logit enters bounded twice: as a probability (is this a candidate?) and as a
        # squashed margin (how sure?).
        self.logit_proj = nn.Linear(2, embed_dims)
        self.side_proj = nn.Linear(5, embed_dims)
        # and a direct, name-dependent weighting of them ("on the left": no candidate further
        # left), from the pooled name and from its words one by one: a pooled sentence embedding
        # barely tells "the diamond on the left" from "... on the right", the words "left" and
        # "right" alone differ.
        self.name_sides = nn.Linear(embed_dims, 5)
        self.word_sides = nn.Sequential(nn.Linear(embed_dims, embed_dims), nn.ReLU(), nn.Linear(embed_dims, 5))
        layer = nn.TransformerEncoderLayer(embed_dims, num_heads, dim_feedforward=ffn_dims, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(embed_dims), nn.Linear(embed_dims, 1))

    def init_weights(self) -> None:
        """The correction starts at zero: the plain alignment is unchanged until this is trained."""
        if not self.out[1].weight.is_meta:
            nn.init.zeros_(self.out[1].weight)
            nn.init.zeros_(self.out[1].bias)
            # silent at the start too, so that adding them to a trained module changes nothing
            for layer in (self.side_proj, self.name_sides, self.word_sides[-1]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def encode_points(self, points: torch.Tensor) -> torch.Tensor:
        feats = sine_point_features(points, self.num_point_feats, 20.0)
        return self.point_proj(feats.to(self.point_proj.weight.dtype))

    def candidates_around(self, points: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``[n, M, 5]``: per name and token, the other tokens' candidate mass to its left,
        right, above and below, and in total."""
        mass = logits.detach().sigmoid().t()  # [n, M]
        mass = mass[:, None, :] * (1 - torch.eye(points.shape[0], device=points.device, dtype=mass.dtype))  # [n, i, j]
        delta = (points[None, :, :] - points[:, None, :]) / self.side_temperature  # [i, j, 2]: p_j - p_i
        sides = torch.stack([(-delta[..., 0]).sigmoid(), delta[..., 0].sigmoid(),
                             (-delta[..., 1]).sigmoid(), delta[..., 1].sigmoid()], -1)  # left, right, above, below
        around = torch.einsum("nij,ijs->nis", mass, sides.to(mass.dtype))
        return torch.cat([around, mass.sum(-1, keepdim=True)], -1)

    def side_weights(self, names: torch.Tensor, words: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """``[n, 5]`` weights of the candidate mass on each side, from the pooled names ``[n, C]``
        and their word features ``[n, T, C]`` (``padding [n, T]`` True = padding)."""
        valid = (~padding).unsqueeze(-1).to(words.dtype)
        return self.name_sides(names) + (self.word_sides(words) * valid).sum(1)

    def forward(self, tokens: torch.Tensor, points: torch.Tensor, names: torch.Tensor,
                logits: torch.Tensor, side_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tokens ``[M, C]``, points ``[M, 2]`` (cx, cy) in [0, 1], names ``[n, C]``, plain
        logits ``[M, n]``, ``side_weights [n, 5]`` (:meth:`side_weights`; from the pooled names
        alone when None) → refined logits ``[M, n]``."""
        if side_weights is None:
            side_weights = self.name_sides(names)
        per_token = self.token_proj(tokens) + self.encode_points(points)  # [M, C]
        logit_feats = torch.stack([logits.sigmoid(), torch.tanh(logits / 4)], -1).transpose(0, 1)  # [n, M, 2]
        around = self.candidates_around(points, logits).to(per_token.dtype)  # [n, M, 5]
        x = per_token[None] + self.name_proj(names)[:, None] + self.logit_proj(logit_feats) + self.side_proj(around)
        correction = self.out(self.layers(x))[..., 0] + (side_weights[:, None] * around).sum(-1)  # [n, M]
        return logits + correction.t()
