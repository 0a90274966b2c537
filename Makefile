# Two entry points for a fresh machine with Python 3.11 and access to the package registries:
#   make demo   synthesise data, train, evaluate, write docs/demo.png (uses CUDA when present)
#   make test   ruff + mypy + the whole test suite (napari tests run under Xvfb via pytest-xvfb)
# The virtual environment is rebuilt only when pyproject.toml (or TORCH_SPEC) changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
# CPU build of torch from this machine's local wheel; for CUDA set e.g. TORCH_SPEC=torch (see README).
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-$(shell cat pyproject.toml | sha1sum | cut -c1-10)-$(shell echo '$(TORCH_SPEC)' | sha1sum | cut -c1-6)

.PHONY: env demo test lint bench weights screenshot clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[napari,dev]"
	rm -f $(VENV)/.stamp-*
	touch $@

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_threshold.py

weights: $(STAMP)
	$(BIN)/python scripts/train_demo_weights.py

screenshot: $(STAMP)
	$(BIN)/python scripts/napari_screenshot.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
