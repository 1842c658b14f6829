# Set-up and the two README commands. torch is pinned here (not in pyproject) because this machine
# has a CPU wheel of torch 2.13.0 on disk; an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
THREADS ?= 2
export OMP_NUM_THREADS := $(THREADS)
export HF_HUB_OFFLINE := 1

.PHONY: install demo test bench lint
install: $(VENV)/.installed

# The ui extra (Gradio) and Playwright's Python package for the page's tests. Playwright never downloads a
# browser here: the browser test drives Debian's chromium (`apt-get install chromium`; .ci/run installs it).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0" -e ".[dev,nudenet,ui]" playwright
	touch $@

demo: install
	$(BIN)/hsteer demo --out hsteer-demo --threads $(THREADS)

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/run.py --json --threads $(THREADS)

lint: install
	$(BIN)/ruff check src tests benchmarks
