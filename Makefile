# Set-up and the two README commands. torch is pinned here (not in pyproject) because this machine
# has a CPU wheel of torch 2.13.0 on disk; an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
THREADS ?= 2
export OMP_NUM_THREADS := $(THREADS)
export HF_HUB_OFFLINE := 1

.PHONY: install demo test browser docs bench lint
install: $(VENV)/.installed

# The ui extra (Gradio), the docs extra (MkDocs) and Playwright's Python package for the page's tests.
# Playwright never downloads a browser here: the browser tests drive Debian's chromium (`make browser`).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0" -e ".[dev,docs,nudenet,ui]" playwright
	touch $@

demo: install
	$(BIN)/hsteer demo --out hsteer-demo --threads $(THREADS)

# One pytest-xdist worker per thread, whole files per worker (a file's module fixtures, such as the demo's
# run, are built once); tests/cpu.py gives each worker its share of the threads.
test: install browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n $(THREADS) --dist loadfile

# The browser tests (tests/test_ui_browser.py) drive Debian's chromium at HSTEER_CHROMIUM (default
# /usr/bin/chromium). Installed with apt-get only where it is missing (as root, or through sudo); if that
# fails, make says why and goes on, and the browser tests fail with the reason (they never skip).
CHROMIUM ?= $(or $(HSTEER_CHROMIUM),/usr/bin/chromium)
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	    echo "make: installing Debian's chromium for the browser tests (apt-get)"; \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    if ! { $$SUDO apt-get update -qq && \
	           $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then \
	        echo "make: ERROR: could not install chromium with apt-get; tests/test_ui_browser.py will fail" >&2; \
	    fi; \
	fi

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or reference fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: install
	$(BIN)/python benchmarks/run.py --json --threads $(THREADS)

lint: install
	$(BIN)/ruff check src tests benchmarks
