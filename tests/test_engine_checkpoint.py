"""Atomic checkpoint writes and trainable-only checkpoint contents."""
import os

import pytest
import torch
from torch import nn

from visionllm.engine.checkpoint import AtomicLocalBackend, TrainableStateCheckpointHook


def test_atomic_put_replaces_whole_file(tmp_path):
    backend = AtomicLocalBackend()
    target = tmp_path / "sub" / "latest.pth"
    backend.put(b"first version", target)
    backend.put(b"second", target)
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["latest.pth"]


def test_killed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    backend = AtomicLocalBackend()
    target = tmp_path / "epoch_1.pth"
    backend.put(b"complete old checkpoint", target)

    def killed(*_args):
        raise KeyboardInterrupt("process killed during save")

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        backend.put(b"partial new checkpoint" * 1000, target)
    assert target.read_bytes() == b"complete old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_1.pth"], "temporary file left behind"


def test_put_text_is_atomic_too(tmp_path):
    backend = AtomicLocalBackend()
    backend.put_text("work_dirs/x/iter_10.pth", tmp_path / "last_checkpoint")
    assert (tmp_path / "last_checkpoint").read_text() == "work_dirs/x/iter_10.pth"


class _ModelWithPretrained(nn.Module):
    def __init__(self):
        super().__init__()
        self.pretrained = nn.Linear(3, 3)
        self.pretrained.weight.requires_grad_(False)  # frozen, comes from a package
        self.head = nn.Linear(3, 1)
        self.register_buffer("pretrained_stat", torch.ones(2))

    def frozen_pretrained_keys(self):
        return ["pretrained.weight", "pretrained_stat"]


def test_hook_drops_only_pretrained_frozen_keys():
    model = _ModelWithPretrained()

    class Runner:
        pass

    runner = Runner()
    runner.model = model
    checkpoint = {"state_dict": dict(model.state_dict()), "meta": {}}
    TrainableStateCheckpointHook().before_save_checkpoint(runner, checkpoint)
    assert set(checkpoint["state_dict"]) == {"pretrained.bias", "head.weight", "head.bias"}


def test_hook_drops_pretrained_keys_under_wrapper_prefixes():
    model = _ModelWithPretrained()

    class Runner:
        pass

    runner = Runner()
    runner.model = model
    wrapped = {"_fsdp_wrapped_module.pretrained._fsdp_wrapped_module.weight": torch.zeros(3, 3),
               "module.pretrained_stat": torch.ones(2),
               "_fsdp_wrapped_module.head.weight": torch.zeros(1, 3)}
    checkpoint = {"state_dict": dict(wrapped), "meta": {}}
    TrainableStateCheckpointHook().before_save_checkpoint(runner, checkpoint)
    assert set(checkpoint["state_dict"]) == {"_fsdp_wrapped_module.head.weight"}


def test_compressed_state_dict_round_trip():
    from visionllm.engine.checkpoint import compress_state_dict, decompress_state_dict
    state = {"backbone.conv.weight": torch.randn(64, 32, 3, 3), "backbone.bn.weight": torch.randn(64),
             "head.weight": torch.randn(10, 600), "steps": torch.tensor(3)}
    packed = compress_state_dict(state, int8_prefixes=("backbone.",))
    assert packed["backbone.conv.weight#int8"].dtype == torch.int8
    assert packed["head.weight"].dtype == torch.float16 and packed["steps"].dtype == torch.int64
    restored = decompress_state_dict(packed)
    assert set(restored) == set(state)
    for key, value in state.items():
        assert restored[key].shape == value.shape and restored[key].dtype == value.dtype
    # int8 per output channel: error at most half a quantisation step of that channel
    w = state["backbone.conv.weight"]
    step = w.reshape(64, -1).abs().amax(1) / 127
    err = (restored["backbone.conv.weight"] - w).reshape(64, -1).abs().amax(1)
    assert (err <= step * 0.5 + step * 1e-2 + 1e-6).all()
    torch.testing.assert_close(restored["head.weight"], state["head.weight"], rtol=1e-3, atol=1e-3)
    assert decompress_state_dict(state) == state  # plain checkpoints pass through
