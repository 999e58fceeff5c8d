"""Extended vocabulary of the task decoder: location, class, no-object and format tokens.

The base vocabulary of the LLM stays frozen; only the rows of the new tokens are trained. Instead
of resizing the Hugging Face embedding (which would make the whole table one trainable tensor),
the input embedding and the output layer are replaced by modules that hold the frozen base table
and a separate trainable table for the new rows. A checkpoint of the trainable state therefore
holds only the new rows (plus LoRA and the decoder's own layers).
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SpecialTokens:
    """Names of the tokens added to the LLM vocabulary.

    Location tokens ``<p-h>..<ph>`` (``h = num_bins // 2``) are offsets from a slot's reference
    point; class tokens ``<c0>..<c{n-1}>`` mean "the i-th category named in this instruction";
    ``<c_none>`` is the no-object class; format tokens name output fields (``<cls>``, ``<x1>``,
    ``<y1>`` ... up to ``max_points`` points).
    """

    def __init__(self, num_bins: int = 1025, num_classes: int = 512, max_points: int = 24):
        if num_bins % 2 != 1:
            raise ValueError(f"num_bins must be odd (symmetric offsets around 0), got {num_bins}")
        self.num_bins = num_bins
        self.num_classes = num_classes
        self.max_points = max_points
        half = num_bins // 2
        self.location_tokens: List[str] = [f"<p{k}>" for k in range(-half, half + 1)]
        self.class_tokens: List[str] = [f"<c{i}>" for i in range(num_classes)]
        self.no_object: str = "<c_none>"
        fields = ["cls"] + [f"{axis}{i}" for i in range(1, max_points + 1) for axis in ("x", "y")]
        self.format_tokens: List[str] = [f"<{name}>" for name in fields]

    def field_token(self, name: str) -> str:
        token = f"<{name}>"
        if token not in self.format_tokens:
            raise KeyError(f"no format token for field {name!r} (max_points={self.max_points})")
        return token

    @property
    def all_tokens(self) -> List[str]:
        return self.location_tokens + self.class_tokens + [self.no_object] + self.format_tokens

    def __len__(self) -> int:
        return len(self.all_tokens)


class _SplitTable(nn.Module):
    """A token table stored as a frozen base part (ids < num_base) and a trainable new part."""

    def __init__(self, base_weight: nn.Parameter, new_weight: nn.Parameter):
        super().__init__()
        self.base_weight = base_weight
        self.new_weight = new_weight

    @property
    def num_base(self) -> int:
        return self.base_weight.shape[0]

    @property
    def weight(self) -> torch.Tensor:
        # Read-only full table for code that inspects `.weight` (shape checks, generation utils).
        return torch.cat([self.base_weight, self.new_weight], dim=0)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The table rows of ``ids`` (base or new), ``[..., dim]``."""
        is_new = ids >= self.num_base
        # A base table held in low precision (VisionLLM's frozen_dtype) yields rows in the
        # trainable table's dtype, so callers see one dtype whichever ids they ask for.
        base = F.embedding(ids.clamp(max=self.num_base - 1), self.base_weight).to(self.new_weight.dtype)
        if not bool(is_new.any()):
            return base
        new = F.embedding((ids - self.num_base).clamp(min=0), self.new_weight)
        return torch.where(is_new.unsqueeze(-1), new, base)


class ExtendedEmbedding(_SplitTable):
    """Input embedding = frozen base table (ids < num_base) + trainable table of the new tokens."""

    @property
    def num_embeddings(self) -> int:
        return self.num_base + self.new_weight.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.base_weight.shape[1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows(ids)


class ExtendedLMHead(_SplitTable):
    """Output layer with frozen base rows and trainable new rows (shared with the input embedding
    when the model ties them). ``subset_logits`` scores only a given token subset, so structured
    fields never pay for the full vocabulary."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.linear(hidden, self.base_weight), F.linear(hidden, self.new_weight)], dim=-1)

    def subset_logits(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., len(ids)]`` of the tokens ``ids`` only."""
        return F.linear(hidden, self.rows(ids))


def _init_new_rows(base: torch.Tensor, num_new: int, noise_std: float,
                   generator: Optional[torch.Generator]) -> torch.Tensor:
    # New rows = mean of the base rows + noise scaled by the per-dimension spread of the base
    # rows (noise_std=1 gives rows as spread as ordinary tokens): they sit inside the distribution
    # the model knows, and are distinguishable (and scorable with confidence) from step 0.
    if base.device.type == "meta":
        return torch.empty(num_new, base.shape[1], device="meta", dtype=base.dtype)
    base = base.detach().float()
    mean = base.mean(dim=0, keepdim=True)
    spread = base.std(dim=0, keepdim=True)
    noise = torch.randn(num_new, base.shape[1], generator=generator) * spread * noise_std
    return (mean + noise).to(base.dtype)


def add_special_tokens(tokenizer, tokens: Sequence[str], num_base: int) -> Dict[str, int]:
    """Add ``tokens`` to the tokenizer (if given) and return token → id.

    The new tokens must get the ids ``num_base, num_base + 1, ...`` so that they index the new
    rows; without a tokenizer (e.g. a meta-device build) the ids are assigned that way directly.
    """
    if tokenizer is None:
        return {token: num_base + i for i, token in enumerate(tokens)}
    tokenizer.add_tokens(list(tokens), special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    first = ids[0]
    if ids != list(range(first, first + len(tokens))):
        raise ValueError("the tokenizer did not give the new tokens contiguous ids "
                         "(some already existed?)")
    if first > num_base:
        raise ValueError(f"the tokenizer has {first} tokens but the model only {num_base} embedding rows")
    return dict(zip(tokens, ids))


def extend_vocabulary(model: nn.Module, tokenizer, special_tokens: SpecialTokens,
                      noise_std: float = 1.0, seed: int = 0) -> Dict[str, int]:
    """Add ``special_tokens`` to ``tokenizer`` and ``model`` (a HF causal LM), keeping the base
    rows frozen and the new rows trainable. Handles tied and untied input/output embeddings.

    Returns the token → id mapping of the new tokens.
    """
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding.weight
    rows = embedding.weight.shape[0]
    token_ids = add_special_tokens(tokenizer, special_tokens.all_tokens, rows)
    # The ids of the first new token may be below the table size when the table was padded
    # (e.g. to a multiple of 64): the padding rows are never used, so drop them.
    first = min(token_ids.values())
    generator = torch.Generator().manual_seed(seed)

    base_in = nn.Parameter(embedding.weight.data[:first], requires_grad=False)
    new_in = nn.Parameter(_init_new_rows(base_in.data, len(token_ids), noise_std, generator))
    model.set_input_embeddings(ExtendedEmbedding(base_in, new_in))
    if tied:
        base_out, new_out = base_in, new_in
    else:
        base_out = nn.Parameter(head.weight.data[:first], requires_grad=False)
        new_out = nn.Parameter(_init_new_rows(base_out.data, len(token_ids), noise_std, generator))
    model.set_output_embeddings(ExtendedLMHead(base_out, new_out))
    # Keep HF from re-tying or resizing the replaced modules later.
    model.config.tie_word_embeddings = False
    model.config.vocab_size = first + len(token_ids)
    return token_ids
