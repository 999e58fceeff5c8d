"""Checkpoints that are written atomically, hold only what training changed, and are read
without running code from the file."""
import io
import json
import os
import os.path as osp
import pickle
import re
import tempfile
from typing import Union
from pathlib import Path

import mmengine
import torch
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.runner.checkpoint import CheckpointLoader

from visionllm.apis.inputs import InputError
from visionllm.engine.checkpoint_conversion import CHECKPOINT_VERSION, VERSION_KEY, convert_checkpoint
from visionllm.registry import HOOKS


def _current_umask() -> int:
    # The umask can only be read by setting it; it is restored at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@register_backend("atomic_local")
class AtomicLocalBackend(LocalBackend):
    """Local files written to a temporary name and renamed into place.

    ``os.replace`` is atomic on POSIX, so a run killed while saving leaves either the previous
    file or the complete new one, never a truncated checkpoint. (mmengine's CheckpointHook
    writes the small ``last_checkpoint`` pointer with a plain ``open``, outside any backend.)
    The file gets the permissions a plain ``open`` would give it (``0o666`` less the umask), not
    the owner-only mode of the temporary file, so others who could read the run's files still can.
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
            os.chmod(tmp_path, 0o666 & ~_current_umask())
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

    It also stamps saved checkpoints with their layout version and converts loaded ones of an
    older version (``visionllm.engine.checkpoint_conversion``).
    """

    priority = "VERY_LOW"

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Published checkpoints may hold int8 weights (see compress_state_dict).
        checkpoint["state_dict"] = decompress_state_dict(checkpoint["state_dict"])
        # in place: the runner goes on with this dict
        converted = convert_checkpoint(checkpoint)
        checkpoint.clear()
        checkpoint.update(converted)
        if "message_hub" in checkpoint:
            checkpoint["message_hub"] = message_hub_from_plain(checkpoint["message_hub"])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault("meta", {})[VERSION_KEY] = CHECKPOINT_VERSION
        if "message_hub" in checkpoint:
            checkpoint["message_hub"] = message_hub_to_plain(checkpoint["message_hub"])
        model = unwrapped_model(runner.model)
        if not hasattr(model, "frozen_pretrained_keys"):
            return
        # Under FSDP the model's own names pass through its nested units (``_fsdp_wrapped_module.``)
        drop = {unwrapped_key(k) for k in model.frozen_pretrained_keys()}
        state = checkpoint["state_dict"]
        for key in [k for k in state if unwrapped_key(k) in drop]:
            del state[key]
        checkpoint.setdefault("meta", {})["dropped_pretrained_keys"] = len(drop)


# mmengine pickles each logged scalar's HistoryBuffer with its statistics methods, which only an
# allowlisted ``getattr`` could rebuild (and ``getattr`` reaches any attribute of any allowed
# object). Checkpoints store the buffers as plain data instead; loading turns them back.
_PLAIN_HISTORY = "__history_buffer__"


def message_hub_to_plain(state: dict) -> dict:
    """A message hub state dict whose HistoryBuffers are plain dicts (lists of numbers)."""
    from mmengine.logging.history_buffer import HistoryBuffer

    scalars = state.get("log_scalars")
    if not scalars:
        return state
    plain = type(scalars)()
    for key, buffer in scalars.items():
        if isinstance(buffer, HistoryBuffer):
            log, count = buffer.data
            buffer = {_PLAIN_HISTORY: True, "max_length": buffer.max_length, "dtype": str(log.dtype),
                      "log_history": log.tolist(), "count_history": count.tolist()}
        plain[key] = buffer
    return dict(state, log_scalars=plain)


def message_hub_from_plain(state: dict) -> dict:
    """Inverse of :func:`message_hub_to_plain` (other state dicts pass through)."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    scalars = state.get("log_scalars") if isinstance(state, dict) else None
    if not scalars:
        return state
    restored = type(scalars)()
    for key, value in scalars.items():
        if isinstance(value, dict) and value.get(_PLAIN_HISTORY):
            value = HistoryBuffer(np.asarray(value["log_history"], dtype=value["dtype"]),
                                  np.asarray(value["count_history"]), max_length=value["max_length"])
        restored[key] = value
    return dict(state, log_scalars=restored)


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
    The file is read by :func:`read_checkpoint`, which runs no code from it, and an older key
    layout is converted to the current one (:func:`convert_checkpoint`).
    """
    checkpoint = read_checkpoint(path)
    state = decompress_state_dict(checkpoint.get("state_dict", checkpoint))
    state = convert_checkpoint(dict(state_dict=state, meta=checkpoint.get("meta") or {}))["state_dict"]
    allowed_missing = set(model.frozen_pretrained_keys()) if hasattr(model, "frozen_pretrained_keys") else set()
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in allowed_missing]
    if missing or result.unexpected_keys:
        raise InputError(f"checkpoint {path} does not fit the model: {len(missing)} missing keys "
                         f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected "
                         f"(e.g. {result.unexpected_keys[:3]})")


class UnsafeCheckpointError(InputError):
    """A checkpoint file holding pickled objects other than tensors and plain data (loading it
    with full unpickling could run any code)."""


def checkpoint_safe_globals() -> list:
    """The non-tensor types our checkpoints legitimately hold, allowed on top of what
    ``torch.load(weights_only=True)`` reads anyway (tensors, dicts, lists, numbers, strings).

    Only numpy arrays and scalars (values logged or stored by mmengine, e.g. a numpy seed): the
    message hub's HistoryBuffers are stored as plain data (:func:`message_hub_to_plain`), and
    published checkpoints hold only tensors and a plain ``meta`` dict. Rebuilding these types
    runs no code of the file's choosing.
    """
    import numpy as np

    numpy_core = getattr(np, "_core", None) or np.core
    return [np.ndarray, np.dtype, numpy_core.multiarray._reconstruct,
            numpy_core.multiarray.scalar] + [type(np.dtype(name)) for name in _NUMPY_DTYPES]


# numpy dtypes that appear in logged values (dtype objects are pickled by their class).
_NUMPY_DTYPES = ("float64", "float32", "float16", "int64", "int32", "int8", "uint8", "bool")
# The line of torch's refusal that names what was refused (its wording differs by version).
_REFUSED = re.compile(r"^(?:WeightsUnpickler error: )?(.*(?:GLOBAL|[Uu]nsupported).*)$", re.MULTILINE)


def read_checkpoint(path: Union[str, Path], map_location="cpu") -> dict:
    """The contents of a ``.pth`` or ``.safetensors`` checkpoint, read without running code.

    ``.pth`` files are unpickled with ``torch.load(weights_only=True)`` and only the types of
    :func:`checkpoint_safe_globals` besides tensors and plain data; a file naming any other
    global (e.g. a class whose unpickling calls ``os.system``) is refused with
    :class:`UnsafeCheckpointError`. ``.safetensors`` files hold tensors only: they come back as
    ``{"state_dict": tensors, "meta": dict}`` (``meta`` from the header entry of that name, JSON).
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise InputError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        return _read_safetensors(path, map_location)
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        match = _REFUSED.search(str(err))
        reason = match.group(1).strip() if match else "not an allowed type"
        raise UnsafeCheckpointError(f"refusing to load {path}: it holds pickled objects other than tensors and "
                                    f"plain data, which could run code ({reason})") from None


def _read_safetensors(path: str, map_location="cpu") -> dict:
    from safetensors import SafetensorError, safe_open

    device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        with safe_open(path, framework="pt", device=device) as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}
            header = handle.metadata() or {}
    except SafetensorError as err:
        raise InputError(f"cannot read safetensors checkpoint {path}: {err}") from None
    try:
        meta = json.loads(header.get("meta", "{}"))
    except json.JSONDecodeError:
        raise InputError(f"the 'meta' entry of {path} is not JSON") from None
    return dict(meta=meta, state_dict=state)


def safetensors_bytes(checkpoint: dict) -> bytes:
    """A ``{"state_dict": tensors, "meta": dict}`` checkpoint in the safetensors format
    (``meta`` as JSON in the header; every tensor copied, since tied tensors may not share memory)."""
    from safetensors.torch import save

    state = {key: value.detach().cpu().contiguous().clone() for key, value in checkpoint["state_dict"].items()}
    return save(state, metadata=dict(meta=json.dumps(checkpoint.get("meta", {}), default=str)))


def write_checkpoint(checkpoint: dict, path: str) -> None:
    """Write ``checkpoint`` atomically: safetensors when ``path`` ends in ``.safetensors``,
    otherwise ``torch.save``'s format."""
    if path.endswith(".safetensors"):
        payload = safetensors_bytes(checkpoint)
    else:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        payload = buffer.getvalue()
    AtomicLocalBackend().put(payload, path)


def _load_local_checkpoint(filename: str, map_location=None) -> dict:
    """mmengine's loader of local checkpoint files (``load_from``, ``resume``, ``load_checkpoint``),
    through :func:`read_checkpoint`."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return read_checkpoint(filename, map_location=map_location)


# mmengine reads local files with a plain torch.load; with this, every checkpoint a runner loads
# (load_from, resume) goes through the same no-code reader once visionllm.engine is imported.
CheckpointLoader.register_scheme(prefixes="", loader=_load_local_checkpoint, force=True)
