# Every target builds what it needs from nothing: `make serve` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint serve clean

venv: $(STAMP)

# torch is installed first and pinned to the CPU build that ships on this class of machine; a bare
# `torch` requirement would otherwise pull a multi-GB CUDA build. cn-clip (the official package, a
# test peer) pins an old lmdb and a torchvision that does not load beside CPU torch: install it alone.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[cpu,training,dev]"
	$(BIN)/python -m pip install -q --no-deps "cn-clip==1.6.0" "timm" "huggingface_hub" "safetensors"
	# cn-clip's torchvision, kept out of site-packages (its __init__ fails here); tests/peers.py imports around it
	$(BIN)/python -m pip install -q --no-deps --target $(VENV)/peers "torchvision==0.28.0"
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
