"""Versioned checkpoint layouts: older key layouts convert to the current one (by the loaders on
the fly and by tools/convert_checkpoint.py), unknown versions are refused in one line."""
import pytest
import torch

from visionllm.apis.inputs import InputError
from visionllm.engine.checkpoint import TrainableStateCheckpointHook, load_trained_checkpoint, read_checkpoint
from visionllm.engine.checkpoint_conversion import (CHECKPOINT_VERSION, VERSION_KEY, CheckpointVersionError,
                                                    checkpoint_version, convert_checkpoint)


def test_version_one_renames_the_instruction_relevance_vector():
    vector, other = torch.randn(8), torch.randn(3)
    old = dict(meta=dict(iter=5), state_dict={"relevance_embedding": vector, "module.relevance_embedding": vector,
                                              "token_projection.gain": other},
               optimizer=dict(state={}))
    assert checkpoint_version(old) == 1  # no version in meta: written before versioning
    new = convert_checkpoint(old)
    assert set(new["state_dict"]) == {"instruction_relevance.embedding", "module.instruction_relevance.embedding",
                                      "token_projection.gain"}
    assert new["state_dict"]["instruction_relevance.embedding"] is vector
    assert new["meta"] == {"iter": 5, VERSION_KEY: CHECKPOINT_VERSION}
    assert "optimizer" not in new  # indexed by parameter order, which the layout change moves
    assert "relevance_embedding" in old["state_dict"] and VERSION_KEY not in old["meta"]  # input untouched
    # a current checkpoint passes through with the same tensors (and keeps its optimizer state)
    again = convert_checkpoint(new | dict(optimizer=dict(state={})))
    assert again["state_dict"] == new["state_dict"] and "optimizer" in again


def test_version_two_gains_the_region_readout_at_zero():
    """Version 3 added the region read-out; older files get it at its starting value (zero), shaped
    like the image-token projection (same two widths), next to it under any wrapper prefix and
    for published float16 / int8 weights alike."""
    from visionllm.engine.checkpoint import compress_state_dict, decompress_state_dict
    weight = torch.randn(96, 4096)  # [LLM width, memory width], large enough to be stored as int8
    for prefix in ("", "module."):
        state = {f"{prefix}token_projection.linear.weight": weight, f"{prefix}token_projection.gain": torch.ones(96)}
        for stored in (state, compress_state_dict(state, int8_prefixes=(prefix,))):
            new = decompress_state_dict(convert_checkpoint(dict(meta={VERSION_KEY: 2}, state_dict=stored))["state_dict"])
            readout_weight = new[f"{prefix}region_readout.projection.weight"]
            assert readout_weight.shape == (96, 4096) and readout_weight.dtype == torch.float32
            assert new[f"{prefix}region_readout.projection.bias"].shape == (96,)
            assert not readout_weight.any() and not new[f"{prefix}region_readout.projection.bias"].any()
    # a file that has the read-out keeps it
    trained = {"token_projection.linear.weight": weight, "region_readout.projection.weight": torch.ones(96, 4096),
               "region_readout.projection.bias": torch.ones(96)}
    kept = convert_checkpoint(dict(meta={VERSION_KEY: 2}, state_dict=trained))["state_dict"]
    assert kept["region_readout.projection.weight"] is trained["region_readout.projection.weight"]
    assert CHECKPOINT_VERSION == 3


@pytest.mark.parametrize("version, message", [(CHECKPOINT_VERSION + 1, "newer than this code reads"),
                                              ("2", "not a version number"), (0, "not a version number")])
def test_unknown_versions_are_refused_in_one_line(version, message):
    with pytest.raises(CheckpointVersionError, match=message) as error:
        convert_checkpoint(dict(meta={VERSION_KEY: version}, state_dict={}))
    assert "\n" not in str(error.value)


def test_the_hook_stamps_saved_checkpoints_and_converts_loaded_ones():
    hook = TrainableStateCheckpointHook()
    saved = dict(state_dict={}, meta={})
    runner = type("Runner", (), {"model": torch.nn.Module()})()
    hook.before_save_checkpoint(runner, saved)
    assert saved["meta"][VERSION_KEY] == CHECKPOINT_VERSION
    loaded = dict(state_dict={"relevance_embedding": torch.zeros(2)}, meta={})
    hook.after_load_checkpoint(runner, loaded)
    assert list(loaded["state_dict"]) == ["instruction_relevance.embedding"]
    assert loaded["meta"][VERSION_KEY] == CHECKPOINT_VERSION


@pytest.mark.slow  # builds the tiny whole model
def test_an_old_layout_checkpoint_converts_and_loads_strictly(tmp_path, monkeypatch, tiny_llm_dir, tiny_workspace):
    from tiny_model import build_tiny_model
    from tool_refusal import tool_refusal
    from tools.convert_checkpoint import main as convert_tool

    _, model, _, _ = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    with torch.no_grad():
        model.instruction_relevance.embedding.normal_()
    dropped = set(model.frozen_pretrained_keys())
    state = {k: v for k, v in model.state_dict().items() if k not in dropped}
    # the layout of version 1, as such files were written
    state["relevance_embedding"] = state.pop("instruction_relevance.embedding")
    old = tmp_path / "old.pth"
    torch.save(dict(meta=dict(iter=1), state_dict=state), old)

    _, fresh, _, _ = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    load_trained_checkpoint(fresh, str(old))  # converted on the fly; any other missing / unexpected key is an error
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key

    out = tmp_path / "new.pth"
    convert_tool([str(old), str(out)])
    converted = read_checkpoint(out)
    assert converted["meta"] == {"iter": 1, VERSION_KEY: CHECKPOINT_VERSION}
    missing, unexpected = fresh.load_state_dict(converted["state_dict"], strict=False)
    assert not unexpected and set(missing) <= dropped

    newer = tmp_path / "newer.pth"
    torch.save(dict(meta={VERSION_KEY: CHECKPOINT_VERSION + 1}, state_dict=converted["state_dict"]), newer)
    with pytest.raises(InputError, match="newer than this code reads"):
        load_trained_checkpoint(fresh, str(newer))
    message = tool_refusal(convert_tool, [str(newer), str(tmp_path / "x.pth")], tmp_path, monkeypatch)
    assert message.count("\n") == 0 and "newer than this code reads" in message
    assert not (tmp_path / "x.pth").exists()
    assert "new file" in tool_refusal(convert_tool, [str(old), str(old)], tmp_path, monkeypatch)
