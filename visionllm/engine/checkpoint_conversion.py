"""Versioned key layouts of VisionLLM checkpoints, and the conversion of older ones.

A checkpoint stores its layout version in ``meta['visionllm_checkpoint_version']``; files written
before versioning have none and are version 1. Every loader of this package (``tools/test.py``,
the inferencer, ``load_from`` / ``resume`` of a runner with ``TrainableStateCheckpointHook``)
converts older layouts to :data:`CHECKPOINT_VERSION` on the fly, and ``tools/convert_checkpoint.py``
writes the converted file. The model code itself never keeps old layouts loadable.

Versions:

1. before versioning: the instruction-relevance vector is ``relevance_embedding``.
2. optional parts are registry components: that vector is ``instruction_relevance.embedding``.
3. the region read-out (``region_readout.projection.weight [hidden, C]`` / ``.bias [hidden]``,
   ``visionllm.models.region_readout``) exists. It starts at zero, where it adds nothing to the
   prompt, so the conversion adds it at that value (shapes from ``token_projection.linear.weight``,
   the same two widths): a converted model behaves exactly as the old one did. A model built
   without the read-out (``region_readout=None``) then refuses the added keys as unexpected, as it
   refuses a trained read-out.
"""
import re
from typing import Callable, Dict

import torch

from visionllm.apis.inputs import InputError

CHECKPOINT_VERSION = 3
VERSION_KEY = "visionllm_checkpoint_version"


class CheckpointVersionError(InputError):
    """A checkpoint whose layout version this code cannot read."""


def _v1_to_v2(state: Dict) -> Dict:
    # (a DDP / FSDP prefix before the name is kept)
    return {re.sub(r"(^|\.)relevance_embedding$", r"\1instruction_relevance.embedding", key): value
            for key, value in state.items()}


def _v2_to_v3(state: Dict) -> Dict:
    state = dict(state)
    for key, weight in list(state.items()):
        # (a DDP / FSDP prefix is kept; a published file may hold the weight as int8)
        match = re.fullmatch(r"(|.*\.)token_projection\.linear\.weight(#int8)?", key)
        if match is None or f"{match.group(1)}region_readout.projection.weight" in state:
            continue
        dtype = weight.dtype if weight.is_floating_point() else torch.float32
        state[f"{match.group(1)}region_readout.projection.weight"] = torch.zeros(weight.shape, dtype=dtype)
        state[f"{match.group(1)}region_readout.projection.bias"] = torch.zeros(weight.shape[0], dtype=dtype)
    return state


# _STEPS[v] turns a state dict of version v into one of version v + 1.
_STEPS: Dict[int, Callable[[Dict], Dict]] = {1: _v1_to_v2, 2: _v2_to_v3}


def checkpoint_version(checkpoint: Dict) -> int:
    """The layout version of a checkpoint dict (1 when its meta names none); a version that is
    not a whole number from 1 to :data:`CHECKPOINT_VERSION` is refused with one line."""
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    version = meta.get(VERSION_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointVersionError(f"checkpoint format version {version!r} is not a version number")
    if version > CHECKPOINT_VERSION:
        raise CheckpointVersionError(f"checkpoint format version {version} is newer than this code reads "
                                     f"(1 to {CHECKPOINT_VERSION}); update visionllm")
    return version


def convert_checkpoint(checkpoint: Dict) -> Dict:
    """A checkpoint dict (``{'state_dict': ..., 'meta': ...}`` or a bare state dict) in the
    current layout, its meta stamped with :data:`CHECKPOINT_VERSION`. The input is not modified;
    a current checkpoint comes back with the same tensors.

    The optimizer state of an older version is dropped (it is indexed by parameter order, which
    a layout change may move): resuming from one restarts the optimizer's moments.
    """
    if "state_dict" not in checkpoint:
        checkpoint = dict(state_dict=checkpoint)
    version = checkpoint_version(checkpoint)
    converted = dict(checkpoint)
    state = dict(checkpoint["state_dict"])
    for step in range(version, CHECKPOINT_VERSION):
        state = _STEPS[step](state)
    if version < CHECKPOINT_VERSION:
        converted.pop("optimizer", None)
    converted["state_dict"] = state
    converted["meta"] = dict(checkpoint.get("meta") or {}, **{VERSION_KEY: CHECKPOINT_VERSION})
    return converted
