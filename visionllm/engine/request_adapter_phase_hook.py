"""A training phase that trains only the request adapter, every other weight held still."""
import math

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from visionllm.registry import HOOKS


def _request_adapter(runner):
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    adapter = getattr(getattr(model, "task_decoder", None), "request_adapter", None)
    if adapter is None:
        raise ValueError("RequestAdapterPhaseHook needs a model with a request adapter "
                         "(model.task_decoder.request_adapter=dict(rank=..., alpha=...))")
    return model, adapter


@HOOKS.register_module()
class RequestAdapterPhaseHook(Hook):
    """From iteration ``begin`` (counted from 0, as ``runner.iter``) to the end of training, only
    the request adapter's weights change (``visionllm.models.llm.request_adapter``).

    Its learning rate follows a cosine from ``lr`` down to ``lr * eta_min_ratio`` over the
    phase; every other parameter group's rate is 0 (AdamW then moves nothing, weight decay
    included), which holds under any wrapper. In one process the other weights are also frozen
    (``requires_grad=False``), so the backward pass skips them; under a distributed wrapper they
    keep their gradients (DDP expects them) and only the zero rate holds them. Before ``begin``
    the adapter is held at its initial weights (rate 0), so the run's earlier iterations are
    those of the same config without it. Pair it with a ``MixtureScheduleHook`` phase that draws
    plain requests only: the adapter is on only while the LLM reads a request, so no other task
    has a gradient for it.
    """

    priority = "LOW"  # after ParamSchedulerHook's step, before the next iteration reads the rate

    def __init__(self, begin: int, lr: float, eta_min_ratio: float = 0.05):
        if not isinstance(begin, int) or isinstance(begin, bool) or begin < 0:
            raise ValueError(f"the phase's begin must be an iteration >= 0, got {begin!r}")
        if lr <= 0:
            raise ValueError(f"the phase's lr must be positive, got {lr}")
        self.begin, self.lr, self.eta_min_ratio = begin, lr, eta_min_ratio
        self._frozen = False

    def rate_at(self, iteration: int, max_iters: int) -> float:
        """The adapter's learning rate at ``iteration`` (0 before the phase)."""
        if iteration < self.begin:
            return 0.0
        progress = (iteration - self.begin) / max(max_iters - self.begin, 1)
        floor = self.lr * self.eta_min_ratio
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def before_train(self, runner) -> None:
        model, adapter = _request_adapter(runner)
        self._adapter_ids = {id(p) for p in adapter.parameters()}
        # the phase's zero rates need the adapter in parameter groups of its own
        for group in runner.optim_wrapper.optimizer.param_groups:
            ids = {id(p) for p in group["params"]}
            if ids & self._adapter_ids and not ids <= self._adapter_ids:
                raise ValueError("RequestAdapterPhaseHook needs the request adapter's parameters in groups of "
                                 "their own: add optim_wrapper.paramwise_cfg.custom_keys"
                                 "['task_decoder.request_adapter'] = dict(lr_mult=1.0)")
        self._model = model

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        iteration = runner.iter
        in_phase = iteration >= self.begin
        if in_phase and not self._frozen and not is_model_wrapper(runner.model):
            for param in self._model.parameters():
                if id(param) not in self._adapter_ids:
                    param.requires_grad_(False)
            self._frozen = True
        rate = self.rate_at(iteration, runner.max_iters)
        for group in runner.optim_wrapper.optimizer.param_groups:
            if any(id(p) in self._adapter_ids for p in group["params"]):
                group["lr"] = rate
            elif in_phase:
                group["lr"] = 0.0
