"""A hook for subprocess training runs in tests: every rank appends ``{"iter", "rank", "loss",
"world_size", "wrapper"}`` (the class wrapping the model) per iteration to
``<work_dir>/losses_rank<r>.jsonl``; and the optimizer wrapper of the DeepSpeed test's reference
(imported through ``custom_imports``)."""
import json
import os

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS, OPTIM_WRAPPERS


@HOOKS.register_module()
class RecordLossToFileHook(Hook):
    priority = "LOWEST"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        rank = get_rank()
        with open(os.path.join(runner.work_dir, f"losses_rank{rank}.jsonl"), "a") as handle:
            handle.write(json.dumps(dict(iter=runner.iter + 1, rank=rank, loss=float(outputs["loss"]),
                                       world_size=get_world_size(), wrapper=type(runner.model).__name__)) + "\n")


@OPTIM_WRAPPERS.register_module()
class ZeroUnusedGradOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose step gives every trainable parameter without a gradient a zero one,
    as DeepSpeed ZeRO does (its flat gradient partitions hold zeros for parameters no rank used,
    so AdamW moves them by momentum and weight decay where one process leaves them alone): the
    one-process reference of the DeepSpeed test."""

    def step(self, **kwargs):
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                if param.requires_grad and param.grad is None:
                    param.grad = torch.zeros_like(param)
        super().step(**kwargs)
