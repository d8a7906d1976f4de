# The two commands: `make reproduce` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install reproduce test test-fast lint clean

install: $(STAMP)

# torch is installed first and alone: the pinned CPU build must be in place before any
# package that depends on torch, or pip resolves an unpinned CUDA build.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/dvc config --local core.analytics false 2>/dev/null || true
	touch $(STAMP)

reproduce: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores all

test: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -q

test-fast: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -q -m "not slow"

lint: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --lint

clean:
	rm -rf data models results reports logs mlflow.db mlflow.db.lock mlruns mlartifacts .snakemake
