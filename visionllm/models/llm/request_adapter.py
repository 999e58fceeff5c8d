"""A low-rank adapter of the LLM that is on only while it reads plain requests.

A plain request is rewritten as a canonical form in a pass of its own (the ``request`` task,
``visionllm.tasks.request``), and every other task (the template-driven ones, captions,
questions, regions, conversations) runs in passes that never include a request. So request
reading can get weights of its own: low-rank updates ``scale * B(A(x))`` added to the outputs
of the decoder layers' projections while ``RequestAdapter.active()`` is entered, and nowhere
else. Training only these weights (``RequestAdapterPhaseHook``) teaches new wordings without
moving any other task's output: those passes run with the adapter off, so they compute
exactly what they computed before it existed.

``B`` starts at zero, so a fresh adapter changes nothing, on or off.
"""
import math
from contextlib import contextmanager
from typing import Optional, Sequence

import torch
from torch import nn

ATTENTION_PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
MLP_PROJECTIONS = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class LowRankUpdate(nn.Module):
    """``scale * B(A(x))`` for one ``Linear(in_features, out_features)``."""

    def __init__(self, in_features: int, out_features: int, rank: int, scale: float, device=None,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # Linear's own init draws from the global generator
            self.A = nn.Linear(in_features, rank, bias=False, device=device)
            self.B = nn.Linear(rank, out_features, bias=False, device=device)
        self.scale = scale
        if self.A.weight.device.type != "meta":
            nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5), generator=generator)
            nn.init.zeros_(self.B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x.to(self.A.weight.dtype))) * self.scale


def _linear_size(module: nn.Module):
    """``(in_features, out_features, device)`` of a ``Linear`` or of a LoRA-wrapped one."""
    base = getattr(module, "base_layer", module)
    return base.in_features, base.out_features, base.weight.device


def _add_update(module: nn.Module, inputs, output):
    """Forward hook of an adapted projection: its low-rank update while its adapter is active."""
    adapter = module._request_adapter
    if not adapter._active:
        return output
    return output + adapter.updates[module._request_adapter_key](inputs[0]).to(output.dtype)


class RequestAdapter(nn.Module):
    """Low-rank updates on ``targets`` (suffixes of module names, e.g. ``"self_attn.q_proj"``) of
    every layer in ``layers``, applied only inside ``active()``.

    Args:
        layers: the decoder layers (HF ``LlamaDecoderLayer`` list).
        rank / alpha: the updates' rank and scale ``alpha / rank`` (as LoRA).
        targets: which projections of each layer get an update; default: attention and MLP.
        seed: of the ``A`` matrices' initialisation, drawn from a generator of their own so that
            adding an adapter leaves every other part's initialisation as it was.
    """

    def __init__(self, layers: Sequence[nn.Module], rank: int = 16, alpha: float = 32,
                 targets: Sequence[str] = ATTENTION_PROJECTIONS + MLP_PROJECTIONS, seed: int = 0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"the request adapter's rank must be positive, got {rank}")
        self.rank, self.alpha, self.targets = rank, alpha, tuple(targets)
        self.updates = nn.ModuleDict()
        self._active = False
        generator = torch.Generator().manual_seed(seed)
        for index, layer in enumerate(layers):
            for target in self.targets:
                try:
                    module = layer.get_submodule(target)
                except AttributeError as error:
                    raise ValueError(f"decoder layer {index} has no {target!r} to adapt") from error
                in_features, out_features, device = _linear_size(module)
                key = f"{index}_{target.replace('.', '_')}"
                self.updates[key] = LowRankUpdate(in_features, out_features, rank, alpha / rank, device=device,
                                                  generator=generator)
                # The hook finds its adapter through the projection's plain (unregistered) attributes,
                # so a deep copy of the model (an EMA copy, say) calls the copy's adapter.
                object.__setattr__(module, "_request_adapter", self)
                object.__setattr__(module, "_request_adapter_key", key)
                module.register_forward_hook(_add_update)

    @contextmanager
    def active(self):
        """Apply the updates to every forward inside the block."""
        previous, self._active = self._active, True
        try:
            yield
        finally:
            self._active = previous
