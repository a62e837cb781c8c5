# Two commands set everything up on a fresh machine: `make test` and `make demo`.
# Both create .venv when missing (CPU build of torch from the local wheel, then the project in editable mode).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo env clean-env benchmarks

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned resolve would pull several GB of CUDA wheels
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/python simulate.py

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/md_throughput.py
	$(BIN)/python benchmarks/swap_mc.py

clean-env:
	rm -rf $(VENV)
