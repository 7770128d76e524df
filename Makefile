# Quick start:  make demo   (whole pipeline on the built-in synthetic demo data)
#               make test   (the test suite)
# Both create ./.venv on first use (CPU torch pinned so pip never pulls a CUDA build).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m ftcp demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

.PHONY: install demo test
