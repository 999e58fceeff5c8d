"""tools/train.py stops before building anything, with one line naming the problem and the fix,
when a pretrained directory is missing (one line per missing input) or the strategy's package is not installed."""
import os
import subprocess
import sys
from repo_paths import REPO


def run_train(config, tmp_path, extra_path=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (extra_path, REPO) if p))
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "train.py"), config,
                           "--work-dir", str(tmp_path / "work")], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)


def test_missing_alpaca_directory_is_one_clear_line(tmp_path):
    proc = run_train(os.path.join(REPO, "configs", "visionllm_r50_alpaca7b_stage1.py"), tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:") and "alpaca" in line]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "checkpoints/alpaca-7b" in lines[0] and "model.task_decoder.llm.source" in lines[0]
    assert not (tmp_path / "work").exists()  # nothing half-written


def test_missing_deepspeed_is_one_clear_line(tmp_path):
    # a `deepspeed` module that fails to import stands for the package being absent
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "deepspeed.py").write_text("raise ImportError('No module named deepspeed')\n")
    proc = run_train(os.path.join(REPO, "configs", "visionllm_r50_alpaca7b_stage1_deepspeed.py"), tmp_path,
                     extra_path=str(fake))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "deepspeed" in lines[0] and "pip install deepspeed" in lines[0], proc.stderr[-2000:]
