"""A hook for subprocess training runs in tests: every rank appends ``{"iter", "rank", "loss",
"world_size", "wrapper"}`` (the class wrapping the model) per iteration to ``<work_dir>/losses_rank<r>.jsonl`` (imported through ``custom_imports``)."""
import json
import os

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RecordLossToFileHook(Hook):
    priority = "LOWEST"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        rank = get_rank()
        with open(os.path.join(runner.work_dir, f"losses_rank{rank}.jsonl"), "a") as handle:
            handle.write(json.dumps(dict(iter=runner.iter + 1, rank=rank, loss=float(outputs["loss"]),
                                       world_size=get_world_size(), wrapper=type(runner.model).__name__)) + "\n")
