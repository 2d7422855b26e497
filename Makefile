# preread: two commands on a fresh machine.
#   make demo   set-up, then the main job on the embedded default
#   make test   set-up, then the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU torch here spends much time in page faults; these were measured to help (see benchmarks/README.md).
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 17179869184

.PHONY: setup demo test test-slow lint clean system-deps

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel this machine has on disk; pyproject caps it below 2.14.
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch<2.14" --index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/preread demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) demo-out .pytest_cache
