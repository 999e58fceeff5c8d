"""The optimizer-wrapper constructor of the VisionLLM configs: mmengine's parameter-wise rules,
reported in one summary line.

mmengine's ``DefaultOptimWrapperConstructor`` applies ``paramwise_cfg`` (learning-rate and decay
multipliers by parameter-name key) and logs one line per parameter while doing it: its setting,
or a warning that a frozen or a shared (tied) parameter is left out. With a frozen LLM that is
hundreds of lines before the first iteration. This constructor builds exactly the same optimizer,
moves those per-parameter lines to the DEBUG level (``log_level="DEBUG"`` still shows them) and
logs what matters at INFO: how many values train at which learning rate, and how many tensors
were left out.
"""
import logging
from collections import Counter, OrderedDict
from typing import Dict, Tuple

from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from visionllm.registry import OPTIM_WRAPPER_CONSTRUCTORS

# Fragments of the per-parameter messages of DefaultOptimWrapperConstructor.add_params, by kind.
PER_PARAMETER_MESSAGES = OrderedDict([
    ("setting", "paramwise_options -- "),
    ("frozen", "is skipped since its requires_grad="),
    ("shared", "is duplicate. It is skipped"),
])


class _DemotePerParameterMessages(logging.Filter):
    """Re-levels mmengine's per-parameter messages to DEBUG (handlers at INFO then drop them)
    and counts them by kind."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for kind, fragment in PER_PARAMETER_MESSAGES.items():
            if fragment in message:
                self.counts[kind] += 1
                record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
                break
        return True


def _count(values: int) -> str:
    """123, 45.6 k, 7.89 M, 6.74 B."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if values >= scale:
            return f"{values / scale:.3g} {unit}"
    return str(values)


def summarise_param_groups(optimizer, left_out: Dict[str, int]) -> str:
    """One line: the optimizer, its trainable values by (lr, weight decay), the tensors left out.

    ``left_out`` maps a reason (``'frozen'``, ``'shared'``) to a number of tensors.
    """
    by_setting: Dict[Tuple[float, float], Tuple[int, int]] = {}
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.requires_grad]
        key = (group["lr"], group.get("weight_decay", 0.0))
        tensors, values = by_setting.get(key, (0, 0))
        by_setting[key] = (tensors + len(params), values + sum(p.numel() for p in params))
    total_tensors = sum(t for t, _ in by_setting.values())
    total_values = sum(v for _, v in by_setting.values())
    show_decay = len({wd for _, wd in by_setting}) > 1
    parts = []
    for (lr, wd), (_, values) in sorted(by_setting.items(), key=lambda item: -item[1][1]):
        if values:
            parts.append(f"lr {lr:.2g}" + (f" wd {wd:.2g}" if show_decay else "") + f": {_count(values)}")
    line = (f"optimizer {type(optimizer).__name__}: {_count(total_values)} trainable values in "
            f"{total_tensors} tensors ({'; '.join(parts) or 'none'})")
    skipped = [f"{count} {reason}" for reason, count in left_out.items() if count]
    if skipped:
        line += f", left out: {', '.join(skipped)} tensors"
    return line


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SummarisingOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` with one INFO summary line instead of per-parameter lines.

    The config key is the same as mmengine's: ``optim_wrapper=dict(constructor=
    'SummarisingOptimWrapperConstructor', optimizer=..., paramwise_cfg=...)``.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        logger = MMLogger.get_current_instance()
        demote = _DemotePerParameterMessages()
        logger.addFilter(demote)
        try:
            optim_wrapper = super().__call__(model)
        finally:
            logger.removeFilter(demote)
        module = model.module if hasattr(model, "module") else model
        left_out = {"frozen": demote.counts["frozen"], "shared": demote.counts["shared"]}
        if not self.paramwise_cfg:
            # Without paramwise rules mmengine hands every parameter to the optimizer unfiltered.
            left_out["frozen"] = sum(1 for p in module.parameters() if not p.requires_grad)
        print_log(summarise_param_groups(optim_wrapper.optimizer, left_out), logger="current")
        return optim_wrapper
