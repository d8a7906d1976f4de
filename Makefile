# The two commands: `make reproduce` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-ner-model lock reproduce smoke test test-fast lint clean image dvc.yaml schema ui browser dvc-commit

install: $(STAMP)

# Every pin of the locks carries the sha256 of each file PyPI has for it, and pip installs
# them with --require-hashes: a file whose hash is not listed is refused, and so is any
# requirement a lock leaves unpinned. torch is the CPU build (2.13.0+cpu, its CPU wheel's
# hash), which pip finds through this machine's pip configuration (find-links) or, elsewhere,
# `make install TORCH_FIND_LINKS=https://download.pytorch.org/whl/cpu/torch/`. The lock pins
# torch itself, so nothing can pull a CUDA build in: no separate torch step is needed.
# Three pins have no wheel (antlr4-python3-runtime, connection-pool, rouge-score): pip builds
# them without build isolation, with the hashed setuptools of requirements-build.lock, since
# an isolated build would fetch its own setuptools unchecked.
# The checkout's venv gets requirements-executors.lock: requirements.lock (what the images
# hold) plus the SLURM and Kubernetes executor plugins, since this is where snakemake submits
# from; one pip pass (a second pass over the same 250 pins took ~30 s of every `make test`).
# The Makefile is a prerequisite: a venv made by an older recipe is brought up to this one.
TORCH_FIND_LINKS ?=
find_links = $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS))
$(STAMP): requirements-executors.lock requirements.lock requirements-build.lock pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-build.lock
	$(BIN)/pip install --quiet --require-hashes --no-build-isolation $(find_links) -r requirements-executors.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/dvc config --local core.analytics false 2>/dev/null || true
	touch $(STAMP)

# `make install-ner-model`: spaCy's official en_core_web_sm for `entities.ner: en_core_web_sm`
# (real runs), from spaCy's release page on github, pinned by URL and sha256 in
# requirements-ner-model.lock and installed with --require-hashes (never an unofficial re-upload
# from a package index). The embedded default does not need it.
install-ner-model: $(STAMP)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-ner-model.lock
	$(BIN)/python -c "import spacy; spacy.load('en_core_web_sm')"

# `make lock`: the three locks again with uv (in its own venv, at a pinned version), hashes
# included. Versions already in a lock stay; delete the lock, or a line, to move it on.
# torch is held to the CPU build of LOCK_TORCH (the locked release unless given): the CPU wheel
# comes from pip's configured find-links, else the PyTorch CPU index; PyPI's own torch is the
# CUDA build, with gigabytes of NVIDIA packages.
UV_VERSION := 0.13.9
LOCK_TOOLS := $(VENV)/lock-tools
UV := $(LOCK_TOOLS)/bin/uv
LOCK_TORCH ?= $(LOCKED_TORCH)
# --no-strip-extras: pip's hash-checking mode rejects a dependency with extras (weasel's
# `smart-open[http]>=5.2.1`) unless the lock pins that very requirement, extras included.
UV_COMPILE = $(UV) pip compile --quiet --generate-hashes --no-strip-extras --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
	--find-links "$${links:-$(TORCH_INDEX_URL)/torch/}"
lock:
	test -x $(UV) || { $(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install --quiet uv==$(UV_VERSION); }
	@test -n "$(LOCK_TORCH)" || { echo "make lock: no torch pin in requirements.lock; name one: make lock LOCK_TORCH=2.13.0" >&2; exit 2; }
	echo "torch==$(LOCK_TORCH)+cpu" >$(LOCK_TOOLS)/torch-cpu.txt
	links=$${TORCH_FIND_LINKS:-$$($(PYTHON) -m pip config get global.find-links 2>/dev/null)}; \
	$(UV_COMPILE) --extra test --constraint $(LOCK_TOOLS)/torch-cpu.txt --output-file requirements.lock pyproject.toml && \
	$(UV_COMPILE) --all-extras --constraint requirements.lock --output-file requirements-executors.lock pyproject.toml && \
	echo setuptools | $(UV_COMPILE) --constraint requirements.lock --output-file requirements-build.lock -

# The workflow profile (all cores, rerun-incomplete, ...): Snakemake looks for one only in
# profiles/default/ beside the Snakefile or the working directory, so it is named. With it and
# the Snakefile's removal of a dead run's locks, the same command resumes a killed run.
reproduce: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --workflow-profile workflow/profiles/default

# `make smoke`: the whole DAG on the test suite's tiny configuration (full and lora, one seed) in
# this checkout, about a minute and a half of CPU: CI runs it before the tests, so a test that
# picks up a run's outputs fails there.
smoke: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores all --configfile tests/fixtures/params-tiny.yaml tests/fixtures/params-smoke.yaml

# The suite runs the SLURM profile on a local cluster and dry-runs the Kubernetes one with the
# plugins `make install` brings. Both targets run on every core (pytest-xdist), with one worker
# more than cores: the end-to-end tests spend part of their time waiting on a scheduler (SLURM
# polls), a server or a killed process.
# `make test` hands out whole files (--dist loadfile; the files that share one end-to-end run go
# together, longest first: tests/conftest.py), so each end-to-end run is built once, by the worker
# that runs its tests.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
# `make test-fast` waits on nothing: one worker per core.
FAST_WORKERS ?= auto
test: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -q -n $(FAST_WORKERS) -m "not slow"

# dvc.yaml is generated from the DAG table (workflow/cfqa/dag/table.py) and params.yaml's methods.
dvc.yaml: install
	$(BIN)/python -m cfqa.dag --write dvc.yaml

# The params JSON schema is generated from the typed configuration (workflow/cfqa/config.py)
# and the methods' options classes (workflow/cfqa/methods/options.py).
schema: install
	$(BIN)/python -m cfqa.config_schema --write

# `make dvc-commit`: after a Snakemake run, record its outputs in dvc.lock without a prompt.
dvc-commit: install
	$(BIN)/dvc commit --force --quiet

# `make ui`: the MLflow UI on this checkout's runs (mlflow.db, artifacts in mlartifacts/), on
# 127.0.0.1 only; GenAI job execution off (it starts seven worker processes). The link opens
# params.yaml's experiment on the runs view cfqa.tracking.view pins (configurations grouped,
# headline metrics as columns).
MLFLOW_PORT ?= 5000
ui: install
	@echo "MLflow UI: $$($(BIN)/python -m cfqa.tracking.view --params params.yaml --url http://127.0.0.1:$(MLFLOW_PORT)) (Ctrl-C stops it)"
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
	rm -rf data models results reports logs runs mlflow.db mlflow.db.lock mlruns mlartifacts .snakemake

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
# The lock pins the CPU build (2.13.0+cpu): the release, without its local label.
LOCKED_TORCH = $(shell sed -n -E 's/^torch==([^ +]+).*/\1/p' requirements.lock)
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

# `make slurm-local`: a real SLURM cluster on this machine (root; Debian's slurmctld, slurmd and
# munge on 127.0.0.1, `cpu` and `gpu` partitions, GPUs the scheduler counts), for
# tests/test_slurm_cluster.py. `tests/cluster/local_slurm.sh stop` stops it.
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
.PHONY: slurm-local
slurm-local:
	@command -v slurmctld >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SLURM_PACKAGES); }
	$(SUDO) tests/cluster/local_slurm.sh start
