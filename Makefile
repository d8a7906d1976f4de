# The two commands: `make reproduce` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install reproduce test test-fast lint clean image dvc.yaml ui browser dvc-commit

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

# dvc.yaml is generated from the DAG table (workflow/cfqa/dag/table.py) and params.yaml's methods.
dvc.yaml: install
	$(BIN)/python -m cfqa.dag --write dvc.yaml

# `make dvc-commit`: after a Snakemake run, record its outputs in dvc.lock without a prompt.
dvc-commit: install
	$(BIN)/dvc commit --force --quiet

# `make ui`: the MLflow UI on this checkout's runs (mlflow.db, artifacts in mlartifacts/), on
# 127.0.0.1 only; GenAI job execution off (it starts seven worker processes).
MLFLOW_PORT ?= 5000
ui: install
	@echo "MLflow UI: http://127.0.0.1:$(MLFLOW_PORT)/#/experiments?workflowType=machine_learning (Ctrl-C stops it)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true $(BIN)/mlflow server \
		--host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
		--backend-store-uri sqlite:///$(CURDIR)/mlflow.db --artifacts-destination $(CURDIR)/mlartifacts

# `make browser`: Debian's Chromium, for tests/test_report_browser.py (the report in a real browser).
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

lint: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --lint

clean:
	rm -rf data models results reports logs mlflow.db mlflow.db.lock mlruns mlartifacts .snakemake

# `make image`: the CPU image from containers/Dockerfile.cpu, built by podman without a daemon
# (RUN steps need chroot isolation here). Each input falls back to what this machine has: the
# registry's Python base, else a Debian base made from packages (containers/make_base.sh);
# torch from the PyTorch CPU index, else its CPU wheel from the local pip sources, copied into
# containers/wheels/; spaCy's model from its release page, else none.
IMAGE ?= cfqa-cpu:0.1.0
IMAGE_REGISTRY_BASE := docker.io/library/python:3.11-slim-bookworm
IMAGE_LOCAL_BASE := localhost/cfqa-base:bookworm
IMAGE_TOOLS := podman buildah mmdebstrap
IMAGE_PACKAGES := $(IMAGE_TOOLS) uidmap fuse-overlayfs curl
TORCH_INDEX_URL := https://download.pytorch.org/whl/cpu
SPACY_MODEL_URL := https://github.com/explosion/spacy-models/releases/download/en_core_web_sm-3.8.0/en_core_web_sm-3.8.0-py3-none-any.whl
LOCKED_TORCH = $(shell sed -n 's/^torch==//p' requirements.lock)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
reachable = curl --silent --fail --head --location --output /dev/null --max-time 15 $(1)

image:
	@for tool in $(IMAGE_TOOLS) curl; do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(IMAGE_PACKAGES); \
	fi
	@set -e; \
	if timeout 300 podman pull --quiet $(IMAGE_REGISTRY_BASE) >/dev/null 2>&1; then \
		base=$(IMAGE_REGISTRY_BASE); \
	else \
		base=$(IMAGE_LOCAL_BASE); \
		echo "no image registry: base $$base from Debian packages"; \
		podman image exists $$base || sh containers/make_base.sh $$base; \
	fi; \
	if $(call reachable,$(TORCH_INDEX_URL)/torch/); then \
		torch=index; \
	else \
		torch=wheels; \
		echo "no PyTorch index: torch $(LOCKED_TORCH)+cpu from the local pip sources"; \
		$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
			--platform manylinux_2_28_x86_64 --dest containers/wheels "torch==$(LOCKED_TORCH)+cpu"; \
	fi; \
	if $(call reachable,$(SPACY_MODEL_URL)); then spacy=$(SPACY_MODEL_URL); else \
		spacy=; echo "spaCy's release page out of reach: the image has no en_core_web_sm"; fi; \
	cert=$${PIP_CERT:-$$($(PYTHON) -m pip config get global.cert 2>/dev/null || true)}; \
	podman build --isolation chroot --format docker --file containers/Dockerfile.cpu --tag $(IMAGE) \
		$${cert:+--secret id=pip-cert,src=$$cert} \
		--build-arg PYTHON_IMAGE=$$base --build-arg TORCH_SOURCE=$$torch \
		--build-arg TORCH_VERSION=$(LOCKED_TORCH) --build-arg SPACY_MODEL_URL=$$spacy .

# `make image-cuda`: the CUDA image from containers/Dockerfile, built as `make image` builds the
# CPU image (podman, chroot isolation, the host's pip CA bundle as build secret). Each input
# falls back to what this machine has: the registry's CUDA base, else the Debian base of
# `make image` (torch's wheels bring the CUDA libraries); torch from the PyTorch CUDA index, else
# from PyPI, whose default Linux wheel is the CUDA build (the Dockerfile checks its CUDA
# version); spaCy's model from its release page, else none.
IMAGE_CUDA ?= cfqa-cuda:0.1.0
IMAGE_CUDA_REGISTRY_BASE := docker.io/nvidia/cuda:13.0.1-runtime-ubuntu24.04
TORCH_CUDA := cu130
TORCH_CUDA_INDEX_URL := https://download.pytorch.org/whl/$(TORCH_CUDA)
PYPI_INDEX_URL := https://pypi.org/simple

.PHONY: image-cuda
image-cuda:
	@for tool in $(IMAGE_TOOLS) curl; do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(IMAGE_PACKAGES); \
	fi
	@set -e; \
	if timeout 300 podman pull --quiet $(IMAGE_CUDA_REGISTRY_BASE) >/dev/null 2>&1; then \
		base=$(IMAGE_CUDA_REGISTRY_BASE); \
	else \
		base=$(IMAGE_LOCAL_BASE); \
		echo "no image registry: base $$base from Debian packages"; \
		podman image exists $$base || sh containers/make_base.sh $$base; \
	fi; \
	if $(call reachable,$(TORCH_CUDA_INDEX_URL)/torch/); then \
		index=$(TORCH_CUDA_INDEX_URL); \
	else \
		index=$(PYPI_INDEX_URL); \
		echo "no PyTorch index: torch $(LOCKED_TORCH) ($(TORCH_CUDA)) from PyPI"; \
	fi; \
	if $(call reachable,$(SPACY_MODEL_URL)); then spacy=$(SPACY_MODEL_URL); else \
		spacy=; echo "spaCy's release page out of reach: the image has no en_core_web_sm"; fi; \
	cert=$${PIP_CERT:-$$($(PYTHON) -m pip config get global.cert 2>/dev/null || true)}; \
	podman build --isolation chroot --format docker --file containers/Dockerfile --tag $(IMAGE_CUDA) \
		$${cert:+--secret id=pip-cert,src=$$cert} \
		--build-arg CUDA_IMAGE=$$base --build-arg TORCH_INDEX_URL=$$index --build-arg TORCH_CUDA=$(TORCH_CUDA) \
		--build-arg TORCH_VERSION=$(LOCKED_TORCH) --build-arg SPACY_MODEL_URL=$$spacy .
