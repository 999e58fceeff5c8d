"""Atomic checkpoint writes and trainable-only checkpoint contents."""
import os

import pytest
import torch
from torch import nn

from visionllm.engine.checkpoint import AtomicLocalBackend, TrainableStateCheckpointHook
from repo_paths import REPO


def test_atomic_put_replaces_whole_file(tmp_path):
    backend = AtomicLocalBackend()
    target = tmp_path / "sub" / "latest.pth"
    backend.put(b"first version", target)
    backend.put(b"second", target)
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["latest.pth"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_file_has_the_mode_a_plain_open_gives(tmp_path, umask):
    backend = AtomicLocalBackend()
    previous = os.umask(umask)
    try:
        backend.put(b"weights", tmp_path / "atomic.pth")
        (tmp_path / "plain.pth").write_bytes(b"weights")
    finally:
        os.umask(previous)
    mode = (tmp_path / "atomic.pth").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.pth").stat().st_mode & 0o777 == 0o666 & ~umask


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


# ---------------------------------------------------------------- reading runs no code
class _Payload:
    """Unpickling this object runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _payload_checkpoint(tmp_path, name="payload.pth"):
    marker = tmp_path / "payload_ran"
    path = tmp_path / name
    torch.save(dict(meta=dict(note=_Payload(marker)), state_dict=dict(weight=torch.zeros(1))), path)
    return path, marker


def _refused(callable_, marker, *args):
    with pytest.raises(BaseException) as err:  # SystemExit from the command-line tools
        callable_(*args)
    assert not marker.exists(), "the pickled payload ran"
    return err


def test_checkpoint_with_a_pickled_payload_is_refused_without_running_it(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint

    from visionllm.engine.checkpoint import UnsafeCheckpointError, load_trained_checkpoint, read_checkpoint
    path, marker = _payload_checkpoint(tmp_path)
    for load in (read_checkpoint, lambda p: load_trained_checkpoint(nn.Linear(1, 1), p),
                 # what mmengine's runner calls for load_from and resume
                 lambda p: _load_checkpoint(str(p), map_location="cpu")):
        err = _refused(load, marker, path)
        assert err.type is UnsafeCheckpointError
        message = str(err.value)
        assert "\n" not in message and "refusing to load" in message and "system" in message
    # The payload is live: a full unpickling runs it (what torch.load(weights_only=False) did).
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_tools_refuse_a_checkpoint_with_a_pickled_payload(tmp_path):
    from tools.publish_checkpoint import main as publish
    path, marker = _payload_checkpoint(tmp_path)
    err = _refused(publish, marker, ["unused_config.py", str(path), str(tmp_path / "out.pth")])
    assert err.type is SystemExit and str(err.value).startswith("error: refusing to load")
    assert not (tmp_path / "out.pth").exists()


def test_training_checkpoint_contents_load_without_full_unpickling(tmp_path):
    """What mmengine stores besides tensors (the message hub's scalar histories, numpy values,
    the config text) is written as plain data by the checkpoint hook and read back without the
    allowlist growing beyond numpy values."""
    import numpy as np
    from mmengine.logging import HistoryBuffer, MessageHub

    from visionllm.engine.checkpoint import read_checkpoint
    hub = MessageHub.get_instance("checkpoint_contents_test")
    for step in range(3):
        hub.update_scalar("train/loss", np.float32(1.5 - step))
        hub.update_scalar("train/lr", 0.1 * step)
    hub.update_info("iter", 3)
    checkpoint = dict(meta=dict(cfg="model = dict()", seed=np.int64(3), iter=3, time="20261201"),
                      state_dict=dict(weight=torch.arange(3.0)), message_hub=hub.state_dict(),
                      optimizer=torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1).state_dict())
    runner = type("Runner", (), dict(model=nn.Linear(1, 1)))()
    hook = TrainableStateCheckpointHook()
    hook.before_save_checkpoint(runner, checkpoint)
    torch.save(checkpoint, tmp_path / "iter_3.pth")
    loaded = read_checkpoint(tmp_path / "iter_3.pth")
    hook.after_load_checkpoint(runner, loaded)
    assert loaded["meta"]["seed"] == 3 and torch.equal(loaded["state_dict"]["weight"], torch.arange(3.0))
    assert all(isinstance(v, HistoryBuffer) for v in loaded["message_hub"]["log_scalars"].values())
    restored = MessageHub.get_instance("checkpoint_contents_test_restored")
    restored.load_state_dict(loaded["message_hub"])
    for key in ("train/loss", "train/lr"):
        for got, expected in zip(restored.get_scalar(key).data, hub.get_scalar(key).data):
            np.testing.assert_array_equal(got, expected)
            assert got.dtype == expected.dtype
    assert restored.get_scalar("train/loss").mean() == pytest.approx(0.5)
    # mmengine's own HistoryBuffer pickle (rebuilt through `getattr`) stays off the allowlist.
    raw = dict(message_hub=hub.state_dict())
    torch.save(raw, tmp_path / "raw.pth")
    from visionllm.engine.checkpoint import UnsafeCheckpointError
    with pytest.raises(UnsafeCheckpointError, match="HistoryBuffer"):
        read_checkpoint(tmp_path / "raw.pth")


def test_safetensors_checkpoint_round_trip(tmp_path):
    from visionllm.engine.checkpoint import (compress_state_dict, load_trained_checkpoint, read_checkpoint,
                                             safetensors_bytes)
    model = _ModelWithPretrained()
    state = {k: v for k, v in model.state_dict().items() if k not in model.frozen_pretrained_keys()}
    packed = dict(meta=dict(published_from="iter_9.pth", iter=9), state_dict=compress_state_dict(state))
    path = tmp_path / "model.safetensors"
    AtomicLocalBackend().put(safetensors_bytes(packed), path)
    loaded = read_checkpoint(path)
    assert loaded["meta"] == dict(published_from="iter_9.pth", iter=9)
    assert set(loaded["state_dict"]) == set(state)
    fresh = _ModelWithPretrained()
    load_trained_checkpoint(fresh, str(path))
    for key, value in state.items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=1e-3, atol=1e-3)
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    from visionllm.apis.inputs import InputError
    with pytest.raises(InputError, match="cannot read safetensors checkpoint"):
        read_checkpoint(tmp_path / "broken.safetensors")


@pytest.mark.parametrize("config", sorted(name for name in os.listdir(os.path.join(
    REPO, "configs")) if name.endswith(".py")))
def test_every_shipped_config_saves_through_the_atomic_backend(config, tmp_path):
    """The file backend mmengine's CheckpointHook gets from each shipped config (a real save of
    the tiny config through it: test_shipped_config_training)."""
    from mmengine.config import Config
    from mmengine.fileio import get_file_backend
    import visionllm.engine  # noqa: F401  registers the backend, as the configs' custom_imports do
    repo = REPO
    hook = Config.fromfile(os.path.join(repo, "configs", config)).default_hooks.checkpoint
    assert hook.type == "CheckpointHook"
    backend = get_file_backend(str(tmp_path), backend_args=hook.get("backend_args"))
    assert type(backend) is AtomicLocalBackend


def test_hook_drops_pretrained_keys_named_through_nested_fsdp_units():
    """Under FSDP the model's own parameter names pass through its nested units
    (``layer._fsdp_wrapped_module.weight``) while the full state dict has the plain names."""
    class NestedNames(_ModelWithPretrained):
        def frozen_pretrained_keys(self):
            return ["pretrained._fsdp_wrapped_module.weight", "pretrained_stat"]

    class Runner:
        pass

    runner = Runner()
    runner.model = NestedNames()
    checkpoint = {"state_dict": dict(runner.model.state_dict()), "meta": {}}
    TrainableStateCheckpointHook().before_save_checkpoint(runner, checkpoint)
    assert set(checkpoint["state_dict"]) == {"pretrained.bias", "head.weight", "head.bias"}
