# Two commands on a fresh machine (Python >= 3.10):
#   make demo   creates .venv on first use, installs distgan, runs the default demo (distgan train)
#   make test   the lint gate (ruff, mypy), then the whole test suite (what .ci/run runs)
# The environment is rebuilt when pyproject.toml changes. PYTHON=python3.11 make demo picks the interpreter.

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
INSTALLED := $(VENV)/.installed
# Flower starts flower-superexec, flwr-clientapp, ... by name: the venv's bin/ goes first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: demo test lint install

demo: $(INSTALLED)
	$(BIN)/distgan train

test: lint
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

install: $(INSTALLED)

# The CPU wheel of torch first, so nothing pulls a CUDA build.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,flower,privacy,fid,lsun]"
	touch $@
