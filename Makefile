# Every target builds what it needs from nothing: `make serve` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint serve clean browser-deps demo-model demo-compare

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
	$(BIN)/mypy

# Three workers, whole files each (module-scoped Milvus servers and exports stay shared within a file):
# much of the suite waits on servers and subprocesses rather than computing. Files with slow tests are
# handed out first (tests/conftest.py), so that no worker finishes a long file alone at the end.
test: lint browser-deps
	$(BIN)/python -m pytest -q -n 3 --dist loadfile

# The edit-test loop (under 90 s on 2 cores): lint, then every test but the slow ones (servers, ONNX
# exports, training runs) and the browser's. HTTP behaviour runs in-process on a fake engine and an
# in-memory store (tests/service/fake_app.py); tests/service/test_store_contract.py keeps that store's
# answers equal to Milvus's (Lite here, the 2.3.5 server too in `make test`).
test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow and not browser"

clean:
	rm -rf $(VENV) build *.egg-info

# The browser test needs Debian's chromium and a font with Chinese glyphs; without apt it skips itself.
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi wenquanyi; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q chromium fonts-wqy-microhei >/dev/null || \
	      { apt-get update -q >/dev/null && apt-get install -y -q chromium fonts-wqy-microhei >/dev/null; } || \
	      echo "browser-deps: apt-get failed; the browser test will skip"; \
	  else echo "browser-deps: no apt-get as root; the browser test will skip"; fi; \
	fi

# The demo: train + export the demo model once, start the service, ingest the demo gallery (idempotent:
# upserts by id, and the ingest log skips what is already in), then keep serving until Ctrl+C.
DEMO := artifacts/demo
DEMO_BUNDLE := $(DEMO)/bundle
$(DEMO_BUNDLE)/manifest.json: | $(STAMP)
	test -f $(DEMO)/checkpoint.pt || $(MAKE) demo-model
	$(BIN)/tuwen export $(DEMO)/checkpoint.pt --arch tiny-vit --out $(DEMO_BUNDLE)

serve: $(STAMP) $(DEMO_BUNDLE)/manifest.json
	$(BIN)/tuwen serve --bundle $(DEMO_BUNDLE) & server=$$!; \
	trap 'kill $$server 2>/dev/null; wait $$server' EXIT INT TERM; \
	$(BIN)/tuwen ingest $(DEMO)/data --split test --wait 180 --log data/demo-ingest.log \
	  --report data/demo-ingest-failures.jsonl && \
	echo "Tuwen is serving the demo on http://127.0.0.1:8000 (Ctrl+C stops it)" && wait $$server


# The demo model: synthetic data -> tiny English CLIP -> stage 1 (frozen image tower) -> stage 2, plus the
# from-scratch ablation; writes $(DEMO)/checkpoint.pt (arch tiny-vit) and $(DEMO)/eval.json (CPU, a few minutes).
demo-model: $(STAMP)
	$(BIN)/python -m training.demo --out $(DEMO)

# The three families' recipes on the demo's data and step budget: Chinese-CLIP two-stage, AltCLIP (teacher
# learning from the demo's English CLIP text tower, then contrastive), ALIGN and from scratch; held-out
# R@1/5/10 in $(DEMO)-compare/compare.json and as a table (CPU, 5-10 minutes on 2 cores).
demo-compare: $(STAMP)
	$(BIN)/python -m training.demo_compare --out $(DEMO)-compare
