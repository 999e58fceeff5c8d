"""tools/estimate_memory.py: parameter counts of the meta-device build equal the real model's,
FSDP units are the per-layer policy's, and every printed row adds up."""
import os
import re
import subprocess
import sys

import pytest
import torch

from tiny_model import tiny_model_cfg, write_tiny_config
from repo_paths import REPO


def test_meta_budget_counts_the_real_model(tiny_llm_dir):  # noqa: F811
    from mmengine.registry import init_default_scope

    import visionllm.models  # noqa: F401
    from visionllm.engine.memory import build_meta_model, meta_model_cfg, parameter_budget
    from visionllm.engine.strategies import is_layer_unit
    from visionllm.registry import MODELS
    cfg = tiny_model_cfg(tiny_llm_dir)
    meta_cfg, notes = meta_model_cfg(cfg)
    assert notes == []  # the LLM directory exists: its config.json sizes the meta LLM
    meta = build_meta_model(meta_cfg)
    assert all(p.is_meta for p in meta.parameters())
    budget = parameter_budget(meta)
    init_default_scope("visionllm")
    real = MODELS.build(cfg)
    unique = {id(p): p for p in real.parameters()}.values()
    assert budget.trainable == sum(p.numel() for p in unique if p.requires_grad)
    assert budget.frozen == sum(p.numel() for p in unique if not p.requires_grad)
    # units: the Llama decoder layers, the BERT layer and the 4 ResNet stages of the real model
    layers = [m for m in real.modules() if is_layer_unit(m)]
    assert budget.num_units == len(layers) == 2 + 1 + 4
    assert budget.largest_unit == max(sum(p.numel() for p in m.parameters()) for m in layers)
    assert budget.root_unit == budget.total - sum(sum(p.numel() for p in m.parameters()) for m in layers)
    # the BERT layer and the ResNet stages may run several times per step: FSDP holds them gathered
    held = [m for m in layers if type(m).__name__ != "LlamaDecoderLayer"]
    assert budget.held_units == sum(sum(p.numel() for p in m.parameters()) for m in held)


def test_memory_table_formulas():
    from visionllm.engine.memory import GB, Activations, ParameterBudget, memory_table
    budget = ParameterBudget(trainable=10 ** 8, frozen=7 * 10 ** 9, root_unit=3 * 10 ** 8, largest_unit=2 * 10 ** 8,
                             units_with_trainable=6 * 10 ** 9, num_units=32)
    acts = Activations(tokenizer_fp32=4 * GB, llm_fp32=8 * GB, llm_16=4 * GB)
    rows = {(r.strategy, r.precision): r for r in memory_table(budget, acts, gpus=8, batch=2)}
    ddp32, ddp16 = rows["DDP", "fp32"], rows["DDP", "bf16"]
    assert ddp32.params == pytest.approx(4 * budget.total / GB)
    assert ddp16.params == pytest.approx((4 * budget.trainable + 2 * budget.frozen + 2 * budget.trainable) / GB)
    assert ddp32.optimizer == pytest.approx(8 * budget.trainable / GB)
    assert ddp32.activations == pytest.approx(2 * 12) and ddp16.activations == pytest.approx(2 * (2 + 4))
    for strategy in ("FSDP", "ZeRO-2", "ZeRO-3"):
        assert rows[strategy, "fp32"].optimizer == pytest.approx(ddp32.optimizer / 8)
    assert rows["FSDP", "bf16"].params < ddp16.params and rows["ZeRO-3", "bf16"].params < rows["ZeRO-2", "bf16"].params
    # DDP sends only the trainable gradients (ring all-reduce: 2 (n-1)/n of their bytes)
    assert ddp32.communication == pytest.approx(2 * 7 / 8 * 4 * budget.trainable / GB)
    assert rows["FSDP", "fp32"].communication > 10 * ddp32.communication
    # FSDP all-gathers every layer unit for forward and again for backward, the root unit once
    # (not resharded after forward), and reduce-scatters the units holding trainable tensors (fp32)
    layers = budget.total - budget.root_unit
    assert rows["FSDP", "bf16"].communication == pytest.approx(
        7 / 8 * (2 * (2 * layers + budget.root_unit) + 4 * budget.units_with_trainable) / GB)
    # Units held gathered through the step (SHARD_GRAD_OP) add their bytes to FSDP's parameters
    # (in place of the two largest other units) and are gathered once instead of twice.
    import dataclasses
    held = dataclasses.replace(budget, held_units=4 * 10 ** 8, largest_resharded_unit=10 ** 8)
    held_rows = {(r.strategy, r.precision): r for r in memory_table(held, acts, gpus=8, batch=2)}
    assert held_rows["FSDP", "bf16"].params == pytest.approx(rows["FSDP", "bf16"].params + 2 * (4 - 2) * 10 ** 8 / GB)
    assert held_rows["FSDP", "bf16"].communication == pytest.approx(
        rows["FSDP", "bf16"].communication - 7 / 8 * 2 * 4 * 10 ** 8 / GB)
    assert held_rows["ZeRO-3", "bf16"] == rows["ZeRO-3", "bf16"]


@pytest.mark.slow
def test_estimate_memory_tool_prints_rows_that_add_up(tmp_path, tiny_llm_dir):  # noqa: F811
    config = write_tiny_config(tmp_path, tiny_llm_dir)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "estimate_memory.py"), config, "--gpus", "2",
                           "--gpu-memory", "80", "40", "--image-size", "64", "96", "--probe-scale", "1"],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    rows = [line for line in proc.stdout.splitlines() if re.match(r"\| (DDP|FSDP|ZeRO-[23]) ", line)]
    assert len(rows) == 8
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        params, grads, optim, acts, total = map(float, cells[2:7])
        assert total == pytest.approx(params + grads + optim + acts, abs=0.2)
        assert cells[7] == ("yes" if total <= 72 else "no") and cells[8] == ("yes" if total <= 36 else "no")
    assert "measured on a 64x96 forward" in proc.stdout and "modelled" in proc.stdout
    budget_line = next(line for line in proc.stdout.splitlines() if line.startswith("parameters:"))
    assert "7 layer units" in budget_line
