"""tools/make_env.sh: a clone's venv is a thin layer over the shared third-party environment."""
import os
import subprocess
import sys
import sysconfig

import pytest
from repo_paths import REPO

ROOT = REPO
SCRIPT = os.path.join(ROOT, "tools", "make_env.sh")


def shared_env_of_running_python():
    """The shared environment this test run sees (the `make` layout), or None outside it."""
    site = sysconfig.get_paths()["purelib"]
    pth = os.path.join(site, "visionllm-shared-env.pth")
    if not os.path.exists(pth):
        return None
    line = open(pth).read()
    shared_site = line.split("addsitedir('", 1)[1].split("')", 1)[0]
    prefix = shared_site.split(os.sep + "lib" + os.sep)[0]
    return prefix if os.path.exists(os.path.join(prefix, ".complete")) else None


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files
               if not os.path.islink(os.path.join(d, f)))


def run_script(shared, venv):
    env = dict(os.environ, PYTHON_BOOTSTRAP=os.environ.get("PYTHON_BOOTSTRAP", "python3.11"))
    return subprocess.run(["bash", SCRIPT, shared, venv], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(shared_env_of_running_python() is None, reason="not running in the make-built layered environment")
def test_thin_venv_reuses_the_shared_environment_and_replaces_an_old_venv(tmp_path):
    shared = shared_env_of_running_python()
    venv = tmp_path / "venv"
    # An older full venv in the same place (with a package the thin layer must not keep).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    stale = venv / "lib" / "stale_marker"
    stale.write_text("old")

    result = run_script(shared, str(venv))
    assert result.returncode == 0, result.stderr
    assert "creating the shared environment" not in result.stdout  # the complete cache entry was reused
    assert not stale.exists()
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sys, torch, mmdet, visionllm; print(sys.prefix); print(visionllm.__file__); print(torch.__file__)"],
        capture_output=True, text=True, cwd=str(tmp_path), check=True).stdout.split()
    assert probe[0] == str(venv)
    assert probe[1].startswith(os.path.join(ROOT, "visionllm"))  # the editable install of this clone
    assert probe[2].startswith(shared)  # torch comes from the shared layer, not a copy
    assert folder_bytes(venv) < 5 * 2**20


def test_refuses_to_replace_a_folder_that_is_not_a_venv(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / ".complete").touch()  # pretend the cache exists so nothing is installed
    target = tmp_path / "my_data"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    result = run_script(str(shared), str(target))
    assert result.returncode != 0
    assert "is not a virtual environment" in result.stderr
    assert (target / "keep.txt").read_text() == "precious"
