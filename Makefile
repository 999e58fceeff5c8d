# The two commands: `make demo` and `make test`. Both create (or reuse) the environment.
VENV ?= .venv
PYTHON_BOOTSTRAP ?= python3.11
export PYTHON_BOOTSTRAP
PY := $(VENV)/bin/python
REQUIREMENTS := requirements.txt requirements-embedded.txt requirements-test.txt
# The third-party packages live once per requirements hash (and Python, machine) outside the
# clone; the clone's $(VENV) is a thin layer over them (see tools/make_env.sh).
ENV_HASH := $(shell (cat $(REQUIREMENTS); $(PYTHON_BOOTSTRAP) --version 2>&1; uname -m) | sha1sum | cut -c1-12)
ENV_CACHE ?= $(HOME)/.cache/visionllm
SHARED_ENV := $(ENV_CACHE)/env-$(ENV_HASH)
ENV_STAMP := $(VENV)/.visionllm-env-$(ENV_HASH)
export MAX_JOBS ?= 2
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: env ops test test-fast demo serve check-cuda benchmark clean-ops

env: $(ENV_STAMP)

$(ENV_STAMP): $(REQUIREMENTS) tools/make_env.sh setup.py
	tools/make_env.sh $(SHARED_ENV) $(VENV)
	touch $@

# Incremental build of the CPU kernels in place (setuptools rebuilds only what changed).
ops: $(ENV_STAMP)
	$(PY) setup.py -q build_ext --inplace

test: ops
	$(PY) -m pytest -q --durations=20 tests

# Everything except the tests marked slow (whole model, training, the real LLM): for development.
test-fast: ops
	$(PY) -m pytest -q -m "not slow" tests

demo: ops
	$(PY) tools/demo.py

# The web page and HTTP API of the shipped model on http://127.0.0.1:7860 (docs/serving.md);
# e.g. `make serve SERVE_ARGS="--host 0.0.0.0 --port 8000"`.
serve: ops
	$(PY) tools/serve.py configs/visionllm_tiny_shapes.py checkpoints/visionllm_tiny_shapes.pth $(SERVE_ARGS)

# Compiles the CUDA kernels with nvcc (they cannot run here); slow, so not in the fast path.
check-cuda: $(ENV_STAMP)
	$(PY) tools/check_cuda_build.py

benchmark: ops
	$(PY) tools/benchmark_ops.py

clean-ops:
	find custom_ops -name '_C*.so' -delete; rm -rf build
