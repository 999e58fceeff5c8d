#!/usr/bin/env bash
# Create the environment `make` uses, in two layers:
#   SHARED_ENV  the third-party packages (torch's CUDA build alone is ~5.5 GB), built once per
#               requirements hash in a cache outside the clone and reused by every clone;
#   VENV        the clone's own thin venv (a few MB): it sees SHARED_ENV through a .pth file and
#               holds only the editable install of this project.
# A fresh clone therefore costs megabytes, not gigabytes, once the cache exists.
#   tools/make_env.sh SHARED_ENV VENV
set -euo pipefail
SHARED_ENV=$1
VENV=$2
PYTHON_BOOTSTRAP=${PYTHON_BOOTSTRAP:-python3.11}
command -v "$PYTHON_BOOTSTRAP" >/dev/null || PYTHON_BOOTSTRAP=python3
ROOT=$(cd "$(dirname "$0")/.." && pwd)

site_packages() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

mkdir -p "$(dirname "$SHARED_ENV")"
# One builder at a time per cache entry; a second clone waits and then reuses the result.
exec 9>"$SHARED_ENV.lock"
flock 9
if [ ! -f "$SHARED_ENV/.complete" ]; then
    # A build killed half way never left `.complete`: start that entry again from nothing.
    rm -rf "$SHARED_ENV"
    echo "creating the shared environment $SHARED_ENV (once per requirements change)"
    "$PYTHON_BOOTSTRAP" -m venv "$SHARED_ENV"
    PIP=("$SHARED_ENV/bin/python" -m pip)
    "${PIP[@]}" install -q --upgrade pip
    "${PIP[@]}" install -q torch==2.14.1 torchvision==0.29.1
    "${PIP[@]}" install -q -r "$ROOT/requirements.txt" -r "$ROOT/requirements-test.txt"
    "${PIP[@]}" install -q --no-deps -r "$ROOT/requirements-embedded.txt"
    touch "$SHARED_ENV/.complete"
fi
flock -u 9

# The clone's layer: rebuilt from nothing each time (seconds), so an older full venv in the same
# place cannot shadow the shared packages.
if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
    echo "$VENV exists and is not a virtual environment; set VENV= to another path" >&2
    exit 1
fi
rm -rf "$VENV"
"$PYTHON_BOOTSTRAP" -m venv --without-pip "$VENV"
# addsitedir (not a bare path) so the shared packages' own .pth files are processed too.
echo "import site; site.addsitedir('$(site_packages "$SHARED_ENV")')" > "$(site_packages "$VENV")/visionllm-shared-env.pth"
# pip and setuptools come from the shared layer; the project installs into the clone's layer.
VISIONLLM_SKIP_OPS=1 "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
