# Quick start:  make demo   (whole pipeline on the built-in synthetic demo data)
#               make test   (the linter, then the test suite)
# Both create ./.venv on first use.  TORCH_SPEC pins torch==2.13.0: on our CI image that version is the
# CPU wheel on local disk; elsewhere on Linux, PyPI's torch wheel bundles CUDA, so for a CPU-only venv use
#   make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" demo
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m ftcp demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

.PHONY: install demo lint test
