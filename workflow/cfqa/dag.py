"""Facts about the pipeline's DAG shared by the Snakefile, dvc.yaml and the tests: which
params.yaml keys each stage reads (so both engines rerun exactly what a change touches)."""
from __future__ import annotations

from typing import Any

# Dotted keys of params.yaml per stage; "{method}" is the method wildcard.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "download": ("data",),
    "prepare": ("prepare",),
    "entities": ("entities",),
    "counterfactuals": ("counterfactuals",),
    "pretrain": ("pretrain",),
    "train": ("train", "methods.{method}"),
    "evaluate": ("train", "methods.{method}", "evaluate", "tracking"),
    "report": ("data.source", "pretrain", "train", "methods", "tracking", "report"),
}


def stage_param_keys(stage: str, method: str | None = None) -> list[str]:
    return [key.format(method=method) for key in STAGE_PARAMS[stage]]


def lookup(config: dict, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def param_slice(config: dict, stage: str, method: str | None = None) -> dict[str, Any]:
    """The values a stage reads, keyed by dotted name: what a Snakemake rule declares."""
    return {key: lookup(config, key) for key in stage_param_keys(stage, method)}
