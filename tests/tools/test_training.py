"""Training entry points: resume continues exactly, checkpoints survive a crash, 2-process runs."""
import os
import subprocess
import sys

import pytest
import torch
from mmengine.hooks import Hook

from tiny_model import write_tiny_config
from visionllm.registry import HOOKS
from repo_paths import REPO

pytestmark = pytest.mark.slow  # trains the whole tiny model

RECORDED = []


class SimulatedCrash(RuntimeError):
    pass


@HOOKS.register_module()
class RecordLossHook(Hook):
    """Records (iteration, loss) and can crash the run right after a given iteration."""

    priority = "LOWEST"  # after the checkpoint hook has saved

    def __init__(self, crash_after=None):
        self.crash_after = crash_after

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        done = runner.iter + 1  # runner.iter counts the iterations finished before this one
        RECORDED.append((done, float(outputs["loss"])))
        if self.crash_after is not None and done == self.crash_after:
            raise SimulatedCrash(f"killed after iteration {done}")


def _run(tmp_path, llm_dir, work_dir, crash_after=None, resume=False):
    from visionllm.apis.runner import build_runner, load_config
    extra = f"\ncustom_hooks = [dict(type='TrainableStateCheckpointHook'), dict(type='RecordLossHook', crash_after={crash_after!r})]\n"
    config = write_tiny_config(tmp_path, llm_dir, max_iters=4, extra=extra)
    cfg = load_config(config, work_dir=str(work_dir))
    if resume:
        cfg.resume, cfg.load_from = True, None
    RECORDED.clear()
    runner = build_runner(cfg)
    try:
        runner.train()
    except SimulatedCrash:
        pass
    return list(RECORDED)


def test_resume_continues_at_the_right_iteration_with_the_same_state(tmp_path, monkeypatch, tiny_llm_dir,  # noqa: F811
                                                                    tiny_workspace):  # noqa: F811
    monkeypatch.chdir(tiny_workspace)
    full = _run(tmp_path / "a", tiny_llm_dir, tmp_path / "uninterrupted")
    assert [i for i, _ in full] == [1, 2, 3, 4]
    first = _run(tmp_path / "b", tiny_llm_dir, tmp_path / "interrupted", crash_after=2)
    assert [i for i, _ in first] == [1, 2]
    assert (tmp_path / "interrupted" / "iter_2.pth").exists()
    assert (tmp_path / "interrupted" / "last_checkpoint").read_text().strip().endswith("iter_2.pth")
    rest = _run(tmp_path / "c", tiny_llm_dir, tmp_path / "interrupted", resume=True)
    assert [i for i, _ in rest] == [3, 4], "resume must continue at iteration 3"
    # Same losses as the run that was never interrupted: same weights, optimizer state and data.
    for (_, expected), (_, got) in zip(full, first + rest):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    a = torch.load(tmp_path / "uninterrupted" / "iter_2.pth", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "interrupted" / "iter_2.pth", map_location="cpu", weights_only=False)
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        for name in va:
            torch.testing.assert_close(va[name], vb[name], rtol=0, atol=0)
    # Only trained weights are stored: the frozen LLM base is restored from its source.
    assert not any(k.endswith("base_layer.weight") for k in a["state_dict"])
    assert any("lora_B" in k for k in a["state_dict"])


def test_two_process_cpu_run_through_dist_train(tmp_path, tiny_llm_dir, tiny_workspace):  # noqa: F811
    """Two ranks ran (each saw world size 2), read different samples, and after every step held
    bit-identical trainable weights that had moved: gradients were averaged across the ranks."""
    import json
    # dist_sync_probe (next to this file) records, on each rank after each step, what the rank saw
    # and a hash of its trainable weights.
    extra = ("\ncustom_imports = dict(imports=['visionllm.models', 'visionllm.datasets', 'visionllm.evaluation', "
             "'visionllm.engine', 'dist_sync_probe'], allow_failed_imports=False)\n"
             "custom_hooks = [dict(type='TrainableStateCheckpointHook'), dict(type='SyncProbeHook')]\n")
    config = write_tiny_config(tmp_path, tiny_llm_dir, max_iters=2, extra=extra)
    env = dict(os.environ, PYTHON=sys.executable, MASTER_PORT=str(29500 + os.getpid() % 1000),
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([REPO, os.path.dirname(os.path.abspath(__file__))]))
    work_dir = tmp_path / "dist"
    proc = subprocess.run(["bash", os.path.join(REPO, "tools", "dist_train.sh"), config, "2",
                           "--work-dir", str(work_dir)], cwd=tiny_workspace, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work_dir / "iter_2.pth").exists()
    records = {}
    for rank in (0, 1):
        path = work_dir / f"sync_probe_rank{rank}.jsonl"
        assert path.exists(), f"rank {rank} wrote no probe record: it did not train"
        records[rank] = [json.loads(line) for line in path.read_text().splitlines()]
    for rank, rows in records.items():
        assert [r["iter"] for r in rows] == [1, 2]
        assert all(r["rank"] == rank and r["world_size"] == 2 for r in rows)
    # The distributed sampler gives each rank its own samples ...
    assert records[0][0]["samples"] != records[1][0]["samples"]
    # ... yet after each step both ranks hold the same weights, and the step changed them.
    for step in range(2):
        assert records[0][step]["weights"] == records[1][step]["weights"], f"ranks diverged at step {step + 1}"
    assert records[0][0]["weights"] != records[0][1]["weights"]


def test_tiny_default_optimizer_slows_the_pretrained_body_and_freezes_its_norms():
    """The embedded default's optimizer (paramwise lr_mult on the ResNet body and the fresh
    read-outs, tied LLM embeddings counted once) builds on the real model, and the body's norm
    layers stay frozen in training."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    from visionllm.registry import MODELS
    init_default_scope("visionllm")
    repo = REPO
    cfg = Config.fromfile(os.path.join(repo, "configs", "visionllm_tiny_shapes.py"))
    model = MODELS.build(cfg.model)
    model.train()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    base_lr = cfg.optim_wrapper.optimizer.lr
    lr_of = {id(p): group["lr"] for group in wrapper.optimizer.param_groups for p in group["params"]}
    trainable = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
    grouped = [id(p) for group in wrapper.optimizer.param_groups for p in group["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(trainable) <= set(grouped)
    # most specific prefix first
    multipliers = {"image_tokenizer.backbone.body.": 0.1, "image_tokenizer.token_appearance.": 10.0,
                   "task_decoder.image_readout.": 10.0, "instruction_relevance.": 10.0,
                   "image_tokenizer.relational_alignment.name_sides.": 50.0,
                   "image_tokenizer.relational_alignment.word_sides.": 50.0,
                   "image_tokenizer.relational_alignment.": 10.0, "task_decoder.box_refinement.": 5.0,
                   "task_decoder.polygon_refinement.": 5.0}
    for pid, name in trainable.items():
        expected = base_lr * next((m for prefix, m in multipliers.items() if name.startswith(prefix)), 1.0)
        assert lr_of[pid] == pytest.approx(expected), name
    assert {prefix for prefix in multipliers if any(n.startswith(prefix) for n in trainable.values())} == set(multipliers)
    body = model.image_tokenizer.backbone.body
    norms = [m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training and not m.weight.requires_grad for m in norms)
    assert any(p.requires_grad for p in body.parameters())
