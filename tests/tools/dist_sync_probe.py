"""A hook for the 2-process training test: after every step, each rank appends to
``<work_dir>/sync_probe_rank<r>.jsonl`` its rank, the world size it sees, the samples of its
batch and a SHA-256 of its trainable weights (names and bytes, in name order)."""
import hashlib
import json
import os

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook

from visionllm.engine import unwrapped_model
from visionllm.registry import HOOKS


def trainable_weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(unwrapped_model(model).named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@HOOKS.register_module()
class SyncProbeHook(Hook):
    priority = "LOWEST"  # after the optimizer step

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        record = dict(rank=get_rank(), world_size=get_world_size(), iter=runner.iter + 1,
                      weights=trainable_weights_digest(runner.model),
                      samples=[[sample.task, sample.img_id] for sample in data_batch["data_samples"]])
        with open(os.path.join(runner.work_dir, f"sync_probe_rank{get_rank()}.jsonl"), "a") as handle:
            handle.write(json.dumps(record) + "\n")
