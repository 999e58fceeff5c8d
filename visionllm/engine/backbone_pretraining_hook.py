"""The dense shape-kind pretraining of the ResNet body as the first stage of a training run."""
import os.path as osp
import time
from typing import Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from visionllm.registry import HOOKS

from .checkpoint import unwrapped_model
from .shape_kind_pretraining import BODY_FILE, pretrain_shape_kind_body


@HOOKS.register_module()
class ShapeKindPretrainingHook(Hook):
    """Before training, pretrain the ResNet body on ``data_root``'s shape-kind maps
    (:func:`~visionllm.engine.shape_kind_pretraining.pretrain_shape_kind_body`), write it to
    ``<work_dir>/<out_dir>/resnet_body.pth`` and load it into ``model.image_tokenizer.backbone``.

    - The body file exists (an earlier run of the same work dir finished the stage): the stage
      is skipped and the file is loaded.
    - The run resumed from a checkpoint (``runner.iter > 0``) or starts from ``load_from``: the
      model's weights come from that checkpoint; nothing is pretrained or loaded.

    The stage runs on the main process only, inside a forked torch RNG, so the rest of the run
    draws the same random numbers whether the stage ran or was skipped. The other processes
    wait for the body file by polling every ``poll_seconds`` (a collective barrier would time
    out: the stage takes longer than the process group's default 30 minutes). A body file that
    does not fit the backbone exactly (other depth) is an error, not a partial load.
    """

    priority = "VERY_HIGH"  # before any other before_train hook sees the weights

    def __init__(self, data_root: str, out_dir: str = "backbone_pretraining", depth: int = 18, iters: int = 1500,
                 batch_size: int = 16, lr: float = 1e-3, size: int = 192, eval_interval: int = 500,
                 max_images: Optional[int] = None, seed: int = 0, log_interval: int = 50,
                 poll_seconds: float = 10.0):
        self.data_root = data_root
        self.poll_seconds = poll_seconds
        self.out_dir = out_dir
        self.settings = dict(depth=depth, iters=iters, batch_size=batch_size, lr=lr, size=size,
                             eval_interval=eval_interval, max_images=max_images, seed=seed,
                             log_interval=log_interval)

    def body_path(self, runner) -> str:
        return osp.join(runner.work_dir, self.out_dir, BODY_FILE)

    def before_train(self, runner) -> None:
        path = self.body_path(runner)
        if runner.iter > 0:
            runner.logger.info(f"backbone pretraining skipped: resumed at iter {runner.iter}, the body comes "
                               "from the checkpoint")
            return
        # mmengine keeps the load_from path private; a run that starts from a checkpoint keeps its body.
        if getattr(runner, "_load_from", None):
            runner.logger.info("backbone pretraining skipped: the weights come from load_from")
            return
        if osp.isfile(path):
            runner.logger.info(f"backbone pretraining skipped: {path} exists")
        else:
            runner.logger.info(f"backbone pretraining on {self.data_root} ({self.settings['iters']} iterations "
                               f"of batch {self.settings['batch_size']}) -> {path}")
            if is_main_process():
                with torch.random.fork_rng(devices=[]):
                    pretrain_shape_kind_body(self.data_root, osp.dirname(path), log=runner.logger.info,
                                             **self.settings)
            else:
                while not osp.isfile(path):
                    time.sleep(self.poll_seconds)
        backbone = unwrapped_model(runner.model).image_tokenizer.backbone
        missing, unexpected = backbone.load_checkpoint(path)
        if missing or unexpected:
            raise RuntimeError(f"{path} does not fit model.image_tokenizer.backbone: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        runner.logger.info(f"loaded the pretrained body {path} into model.image_tokenizer.backbone")
