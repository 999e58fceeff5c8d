"""Checkpoints that are written atomically and hold only what training changed."""
import os
import os.path as osp
import tempfile
from typing import Union
from pathlib import Path

import mmengine
import torch
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import Hook

from visionllm.apis.inputs import InputError
from visionllm.registry import HOOKS


@register_backend("atomic_local")
class AtomicLocalBackend(LocalBackend):
    """Local files written to a temporary name and renamed into place.

    ``os.replace`` is atomic on POSIX, so a run killed while saving leaves either the previous
    file or the complete new one, never a truncated checkpoint or ``last_checkpoint`` pointer.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        filepath = str(filepath)
        mmengine.mkdir_or_exist(osp.dirname(filepath) or ".")
        fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", dir=osp.dirname(filepath) or ".")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(obj)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_path, filepath)
        except BaseException:
            if osp.exists(tmp_path):
                os.remove(tmp_path)
            raise

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = "utf-8") -> None:
        self.put(obj.encode(encoding), filepath)


# Names that DDP / FSDP wrappers insert into state-dict keys (FSDP's sharded or local state
# dicts keep them); the model's own key list never has them.
_WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def unwrapped_key(key: str) -> str:
    """The model's own name of a state-dict key written through a DDP / FSDP wrapper."""
    if key.startswith("module."):
        key = key[len("module."):]
    for part in _WRAPPER_PARTS:
        key = key.replace(part, "")
    return key


def unwrapped_model(model):
    """The model inside a DDP-style wrapper (which keeps it as ``.module``), or the model itself."""
    return model.module if hasattr(model, "module") else model


@HOOKS.register_module()
class TrainableStateCheckpointHook(Hook):
    """Drops from saved checkpoints the weights that ship with the embedded pretrained packages.

    The frozen base LLM and a frozen text encoder are loaded from their packages at build time,
    so storing them again would make the shipped checkpoint hundreds of MB. The model lists the
    keys to drop through ``frozen_pretrained_keys()``; loading then restores them from the
    packages (checkpoints are loaded with ``strict=False`` for those keys only).
    """

    priority = "VERY_LOW"

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Published checkpoints may hold int8 weights (see compress_state_dict).
        checkpoint["state_dict"] = decompress_state_dict(checkpoint["state_dict"])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = unwrapped_model(runner.model)
        if not hasattr(model, "frozen_pretrained_keys"):
            return
        drop = set(model.frozen_pretrained_keys())
        state = checkpoint["state_dict"]
        for key in [k for k in state if unwrapped_key(k) in drop]:
            del state[key]
        checkpoint.setdefault("meta", {})["dropped_pretrained_keys"] = len(drop)


_INT8_SUFFIX = "#int8"
_SCALE_SUFFIX = "#scale"


def compress_state_dict(state: dict, int8_prefixes=(), min_numel: int = 4096) -> dict:
    """A smaller state dict for publishing: float tensors in float16, and matrices / conv kernels
    under ``int8_prefixes`` as int8 with one float32 scale per output channel (absmax / 127).
    :func:`decompress_state_dict` restores float32 tensors of the original shapes."""
    out = {}
    for key, value in state.items():
        if not torch.is_tensor(value) or not value.is_floating_point():
            out[key] = value
        elif value.dim() >= 2 and value.numel() >= min_numel and key.startswith(tuple(int8_prefixes)):
            flat = value.float().reshape(value.shape[0], -1)
            scale = (flat.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)
            out[key + _INT8_SUFFIX] = torch.round(flat / scale).to(torch.int8).reshape(value.shape)
            out[key + _SCALE_SUFFIX] = scale.squeeze(1)  # float32: its rounding would scale every weight
        else:
            out[key] = value.half()
    return out


def decompress_state_dict(state: dict) -> dict:
    """Inverse of :func:`compress_state_dict` (float16 entries become float32; other state dicts
    pass through unchanged)."""
    out = {}
    for key, value in state.items():
        if key.endswith(_SCALE_SUFFIX):
            continue
        if key.endswith(_INT8_SUFFIX):
            name = key[: -len(_INT8_SUFFIX)]
            scale = state[name + _SCALE_SUFFIX].float()
            out[name] = value.float() * scale.view(-1, *([1] * (value.dim() - 1)))
        elif torch.is_tensor(value) and value.dtype == torch.float16:
            out[key] = value.float()
        else:
            out[key] = value
    return out


def load_trained_checkpoint(model: torch.nn.Module, path: str) -> None:
    """Load a checkpoint that holds only the trained weights (see TrainableStateCheckpointHook).

    Keys restored from pretrained packages at build time may be absent; any other missing or
    unexpected key is an error, so a checkpoint of another model is not silently half-loaded.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = decompress_state_dict(checkpoint.get("state_dict", checkpoint))
    allowed_missing = set(model.frozen_pretrained_keys()) if hasattr(model, "frozen_pretrained_keys") else set()
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in allowed_missing]
    if missing or result.unexpected_keys:
        raise InputError(f"checkpoint {path} does not fit the model: {len(missing)} missing keys "
                         f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected "
                         f"(e.g. {result.unexpected_keys[:3]})")
