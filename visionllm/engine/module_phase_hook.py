"""Training phases that train one part of the model only, every other weight held still."""
import math
from typing import Optional, Sequence, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from visionllm.registry import HOOKS


@HOOKS.register_module()
class ModulePhaseHook(Hook):
    """From iteration ``begin`` (counted from 0, as ``runner.iter``) to ``end`` (the end of training
    when None), only the weights of the model's submodule ``module`` (a dotted name, e.g.
    ``'region_relations'``, or a list of such names, trained together as one) change.

    Its learning rate follows a cosine from ``lr`` down to ``lr * eta_min_ratio`` over the
    phase; every other parameter group's rate is 0 (AdamW then moves nothing, weight decay
    included), which holds under any wrapper. In one process with ``freeze_rest`` the other
    weights are also frozen (``requires_grad=False``) and the module's own unfrozen, so the
    backward pass reads only what the phase trains; under a distributed wrapper every parameter
    keeps its gradient (DDP expects them) and only the zero rates hold the rest. Set
    ``freeze_rest=False`` for a module that some of the phase's batches do not reach (a part
    only some samples use): with everything else frozen such a batch's loss has no gradient at
    all and its backward pass fails. What a phase froze is unfrozen after its last step. Outside
    the phase the module's rate is 0 (before it: held at its initial weights; after it: held at
    what the phase taught), and the other groups are left to the schedule or to the next phase's
    hook, so phases of several such hooks run one after another. Pair each with a ``MixtureScheduleHook`` phase that draws
    the data the module serves.
    """

    priority = "LOW"  # after ParamSchedulerHook's step, before the next iteration reads the rate

    def __init__(self, module: Union[str, Sequence[str]], begin: int, lr: float, end: Optional[int] = None,
                 eta_min_ratio: float = 0.05, freeze_rest: bool = True):
        if not isinstance(begin, int) or isinstance(begin, bool) or begin < 0:
            raise ValueError(f"the phase's begin must be an iteration >= 0, got {begin!r}")
        if end is not None and (not isinstance(end, int) or isinstance(end, bool) or end <= begin):
            raise ValueError(f"the phase's end must be an iteration after its begin {begin}, got {end!r}")
        if lr <= 0:
            raise ValueError(f"the phase's lr must be positive, got {lr}")
        names = [module] if isinstance(module, str) else list(module)
        if not names or not all(isinstance(name, str) and name for name in names):
            raise ValueError(f"the phase's module must be a submodule name or a list of them, got {module!r}")
        self.modules = names
        self.module = module
        self.begin, self.end, self.lr, self.eta_min_ratio = begin, end, lr, eta_min_ratio
        self.freeze_rest = freeze_rest
        self._restore = None  # (parameter, requires_grad) as they were before this phase froze them

    def _missing(self, name: str) -> str:
        return f"{type(self).__name__} needs a model with a part {name!r}"

    def _find(self, model, name: str):
        try:
            part = model.get_submodule(name) if hasattr(model, "get_submodule") else None
        except AttributeError:
            part = None
        if part is None:  # a config that leaves the part out sets it to None
            raise ValueError(self._missing(name))
        return part

    def rate_at(self, iteration: int, max_iters: int) -> float:
        """The module's learning rate at ``iteration`` (0 outside the phase)."""
        end = self.end if self.end is not None else max_iters
        if iteration < self.begin or iteration >= end:
            return 0.0
        progress = (iteration - self.begin) / max(end - self.begin, 1)
        floor = self.lr * self.eta_min_ratio
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._ids = {id(p) for name in self.modules for p in self._find(model, name).parameters()}
        # the phase's zero rates need the modules in parameter groups of their own
        for group in runner.optim_wrapper.optimizer.param_groups:
            ids = {id(p) for p in group["params"]}
            if ids & self._ids and not ids <= self._ids:
                keys = ", ".join(f"custom_keys['{name}'] = dict(lr_mult=1.0)" for name in self.modules)
                raise ValueError(f"{type(self).__name__} needs the parameters of {self.module!r} in groups of "
                                 f"their own: add optim_wrapper.paramwise_cfg.{keys}")
        self._model = model

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        iteration = runner.iter
        in_phase = self.begin <= iteration and (self.end is None or iteration < self.end)
        if in_phase and self.freeze_rest and self._restore is None and not is_model_wrapper(runner.model):
            self._restore = [(param, param.requires_grad) for param in self._model.parameters()]
            for param in self._model.parameters():
                param.requires_grad_(id(param) in self._ids)
        rate = self.rate_at(iteration, runner.max_iters)
        for group in runner.optim_wrapper.optimizer.param_groups:
            if any(id(p) in self._ids for p in group["params"]):
                group["lr"] = rate
            elif in_phase:
                group["lr"] = 0.0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        # The phase's last step is done: the weights it froze get their gradients back, so a later
        # phase that does not freeze (or the rest of the run) trains them as configured.
        if self._restore is not None and self.end is not None and runner.iter + 1 >= self.end:
            for param, requires_grad in self._restore:
                param.requires_grad_(requires_grad)
            self._restore = None


@HOOKS.register_module()
class RequestAdapterPhaseHook(ModulePhaseHook):
    """``ModulePhaseHook`` of the request adapter (``visionllm.models.llm.request_adapter``):
    pair it with a phase of plain requests only; the adapter is on only while the LLM reads a
    request, so no other task has a gradient for it."""

    def __init__(self, begin: int, lr: float, end: Optional[int] = None, eta_min_ratio: float = 0.05):
        super().__init__("task_decoder.request_adapter", begin, lr, end=end, eta_min_ratio=eta_min_ratio)

    def _missing(self, name: str) -> str:
        return ("RequestAdapterPhaseHook needs a model with a request adapter "
                "(model.task_decoder.request_adapter=dict(rank=..., alpha=...))")
