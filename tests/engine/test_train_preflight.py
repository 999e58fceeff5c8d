"""tools/train.py stops before building anything, with one line naming the problem and the fix,
when a pretrained directory is missing (one line per missing input) or the strategy's package is not installed."""
import os
import sys

from repo_paths import REPO
from tool_refusal import tool_refusal


def refusal_lines(config, tmp_path, monkeypatch):
    """The ``error:`` lines tools/train.py stops with (run in this process from an empty folder)."""
    from tools.train import main

    message = tool_refusal(main, [config, "--work-dir", str(tmp_path / "work")], tmp_path, monkeypatch)
    assert not (tmp_path / "work").exists()  # nothing half-written
    return [line for line in message.splitlines() if line.startswith("error:")]


def test_missing_alpaca_directory_is_one_clear_line(tmp_path, monkeypatch):
    lines = refusal_lines(os.path.join(REPO, "configs", "visionllm_r50_alpaca7b_stage1.py"), tmp_path, monkeypatch)
    lines = [line for line in lines if "alpaca" in line]
    assert len(lines) == 1, lines
    assert "checkpoints/alpaca-7b" in lines[0] and "model.task_decoder.llm.source" in lines[0]


def test_missing_deepspeed_is_one_clear_line(tmp_path, monkeypatch):
    # a `deepspeed` module that fails to import stands for the package being absent
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "deepspeed.py").write_text("raise ImportError('No module named deepspeed')\n")
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.delitem(sys.modules, "deepspeed", raising=False)
    lines = refusal_lines(os.path.join(REPO, "configs", "visionllm_r50_alpaca7b_stage1_deepspeed.py"), tmp_path,
                          monkeypatch)
    assert len(lines) == 1 and "deepspeed" in lines[0] and "pip install deepspeed" in lines[0], lines
