"""Checkpoints that are written atomically and hold only what training changed."""
import os
import os.path as osp
import tempfile
from typing import Union
from pathlib import Path

import mmengine
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import Hook

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


@HOOKS.register_module()
class TrainableStateCheckpointHook(Hook):
    """Drops from saved checkpoints the weights that ship with the embedded pretrained packages.

    The frozen base LLM and a frozen text encoder are loaded from their packages at build time,
    so storing them again would make the shipped checkpoint hundreds of MB. The model lists the
    keys to drop through ``frozen_pretrained_keys()``; loading then restores them from the
    packages (checkpoints are loaded with ``strict=False`` for those keys only).
    """

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        if not hasattr(model, "frozen_pretrained_keys"):
            return
        drop = set(model.frozen_pretrained_keys())
        state = checkpoint["state_dict"]
        for key in [k for k in state if k in drop]:
            del state[key]
        checkpoint.setdefault("meta", {})["dropped_pretrained_keys"] = len(drop)
