"""SummarisingOptimWrapperConstructor: mmengine's optimizer, one INFO line instead of one per parameter."""
import logging
import uuid

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from visionllm.engine.optim_constructor import SummarisingOptimWrapperConstructor


class Toy(nn.Module):
    """A frozen part, a part with its own lr multiplier, and a weight shared by two modules."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.body = nn.Linear(4, 8)          # 40 values, lr x 0.1
        self.head = nn.Linear(8, 3)          # 27 values
        self.embed = nn.Embedding(3, 8)      # 24 values, shared with `out`
        self.out = nn.Linear(8, 3, bias=False)
        self.out.weight = self.embed.weight


OPTIM = dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.01))
PARAMWISE = dict(custom_keys={"body": dict(lr_mult=0.1)}, bypass_duplicate=True)


class Records(logging.Handler):
    def __init__(self, level):
        super().__init__(level)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def logger_with(level: str) -> Records:
    logger = MMLogger.get_instance(f"optim-test-{uuid.uuid4().hex}", log_level=level)  # becomes current
    records = Records(logging.getLevelName(level))
    logger.handlers.append(records)
    return records


def lr_by_param(wrapper):
    return {id(p): g["lr"] for g in wrapper.optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("paramwise", [PARAMWISE, None])
def test_same_optimizer_as_mmengine_and_one_summary_line(paramwise):
    torch.manual_seed(0)
    model = Toy()
    records = logger_with("INFO")
    ours = SummarisingOptimWrapperConstructor(dict(OPTIM), paramwise)(model)
    assert records.messages and len(records.messages) == 1, records.messages
    theirs = DefaultOptimWrapperConstructor(dict(OPTIM), paramwise)(model)
    assert lr_by_param(ours) == lr_by_param(theirs)

    trainable = {id(p): p for p in model.parameters() if p.requires_grad}  # the shared weight once
    line = records.messages[0]
    assert line.startswith("optimizer AdamW: ")
    assert f"{sum(p.numel() for p in trainable.values())} trainable values in {len(trainable)} tensors" in line
    frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    assert f"{frozen} frozen" in line
    if paramwise:
        body = sum(p.numel() for p in model.body.parameters())
        assert f"lr 0.0001: {body}" in line
        assert "1 shared" in line


def test_per_parameter_lines_stay_available_at_debug():
    records = logger_with("DEBUG")
    SummarisingOptimWrapperConstructor(dict(OPTIM), PARAMWISE)(Toy())
    settings = [m for m in records.messages if m.startswith("paramwise_options -- ")]
    # body.weight and body.bias each get their lr (and decay) line
    assert any("body.weight:lr=" in m for m in settings) and any("body.bias:lr=" in m for m in settings)
    assert any("requires_grad=False" in m for m in records.messages)
    assert sum(m.startswith("optimizer AdamW: ") for m in records.messages) == 1
