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

# Debian packages for the service's integration tests (Orthanc + DICOMweb, headless Chromium, PostgreSQL). Fast when present;
# without root or apt the tests that need them skip.
SYSTEM_PACKAGES := orthanc orthanc-dicomweb chromium chromium-driver postgresql
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q $$missing >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; } \
	  || echo "system-deps: could not install$$missing; their tests will be skipped"; \
	else echo "system-deps: missing$$missing (apt-get install as root); their tests will be skipped"; fi

test: system-deps $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: system-deps $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) demo-out .pytest_cache
