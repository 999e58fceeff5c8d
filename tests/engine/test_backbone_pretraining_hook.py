"""ShapeKindPretrainingHook: before training it pretrains the ResNet body, writes it into the
work dir and loads it into the model's backbone; with the file present it only loads it; a
resumed run keeps the checkpoint's body."""
import os
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MMLogger
from torch import nn

import visionllm.engine.backbone_pretraining_hook as hook_module
from visionllm.datasets.shapes import write_shapes_dataset
from visionllm.engine import ShapeKindPretrainingHook
from visionllm.models.image_tokenizer.backbones.resnet import ResNetBackbone
from visionllm.registry import HOOKS

SETTINGS = dict(iters=2, batch_size=2, size=64, eval_interval=2, seed=3, lr=1e-2)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hook_shapes")
    write_shapes_dataset(str(root), num_train=6, num_val=3, seed=5, image_size=(64, 96), max_objects=3)
    return str(root)


def _runner(work_dir, iteration=0, load_from=None):
    """What the hook reads from mmengine's Runner: the model, the work dir, the iteration, the
    logger and the load_from path."""
    torch.manual_seed(100)  # the same untrained model every time, unlike the pretrained seed 3
    model = nn.Module()
    model.image_tokenizer = nn.Module()
    model.image_tokenizer.backbone = ResNetBackbone(depth=18, embed_dims=32)
    return SimpleNamespace(model=model, work_dir=str(work_dir), iter=iteration, _load_from=load_from,
                           logger=MMLogger.get_instance("hook_test"))


def _body_equals_file(runner, path) -> bool:
    saved = torch.load(path, weights_only=True)
    state = runner.model.image_tokenizer.backbone.body.state_dict()
    assert set(saved) == set(state)
    return all(torch.equal(state[k], v) for k, v in saved.items())


def _count_stage_runs(monkeypatch) -> list:
    calls = []
    original = hook_module.pretrain_shape_kind_body

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(hook_module, "pretrain_shape_kind_body", counting)
    return calls


def test_hook_is_registered():
    assert isinstance(HOOKS.build(dict(type="ShapeKindPretrainingHook", data_root="x")), ShapeKindPretrainingHook)


@pytest.mark.slow  # trains the backbone for two iterations
def test_stage_writes_and_loads_the_body_then_is_skipped(shapes_root, tmp_path, monkeypatch, single_thread):
    calls = _count_stage_runs(monkeypatch)
    hook = ShapeKindPretrainingHook(shapes_root, **SETTINGS)
    runner = _runner(tmp_path)
    untrained = {k: v.clone() for k, v in runner.model.image_tokenizer.backbone.body.state_dict().items()}
    hook.before_train(runner)
    path = hook.body_path(runner)
    assert path == os.path.join(str(tmp_path), "backbone_pretraining", "resnet_body.pth")
    assert len(calls) == 1 and os.path.isfile(path)
    assert _body_equals_file(runner, path)
    # The loaded body is not the model's own start: the comparison above could not pass by accident.
    assert any(not torch.equal(untrained[k], v) for k, v in torch.load(path, weights_only=True).items())

    # Same work dir again (a fresh start after the stage finished): no second stage, same body.
    mtime = os.path.getmtime(path)
    second = _runner(tmp_path)
    assert not _body_equals_file(second, path)
    hook.before_train(second)
    assert len(calls) == 1 and os.path.getmtime(path) == mtime
    assert _body_equals_file(second, path)


@pytest.mark.parametrize("resumed", [dict(iteration=500, load_from="iter_500.pth"), dict(load_from="some.pth")])
def test_a_run_from_a_checkpoint_keeps_its_body(tmp_path, monkeypatch, resumed):
    calls = _count_stage_runs(monkeypatch)
    runner = _runner(tmp_path, **resumed)
    before = {k: v.clone() for k, v in runner.model.image_tokenizer.backbone.body.state_dict().items()}
    ShapeKindPretrainingHook("no_data_needed", **SETTINGS).before_train(runner)
    assert calls == []
    after = runner.model.image_tokenizer.backbone.body.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_a_body_of_another_depth_is_an_error(shapes_root, tmp_path):
    path = os.path.join(str(tmp_path), "backbone_pretraining", "resnet_body.pth")
    os.makedirs(os.path.dirname(path))
    torch.save(ResNetBackbone(depth=34, embed_dims=32).body.state_dict(), path)
    with pytest.raises(RuntimeError, match="does not fit"):
        ShapeKindPretrainingHook(shapes_root, **SETTINGS).before_train(_runner(tmp_path))


def test_other_processes_wait_for_the_main_process_body(tmp_path, monkeypatch):
    """Not the main process: no stage of its own; it loads the body once the file appears."""
    import threading
    calls = _count_stage_runs(monkeypatch)
    monkeypatch.setattr(hook_module, "is_main_process", lambda: False)
    runner = _runner(tmp_path)
    hook = ShapeKindPretrainingHook("no_data_needed", poll_seconds=0.05, **SETTINGS)
    path = hook.body_path(runner)
    torch.manual_seed(7)
    body = ResNetBackbone(depth=18, embed_dims=32).body.state_dict()

    def write_later():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(body, path + ".tmp")
        os.replace(path + ".tmp", path)

    timer = threading.Timer(0.3, write_later)
    timer.start()
    hook.before_train(runner)
    timer.join()
    assert calls == [] and _body_equals_file(runner, path)
