"""Real result files for tests that read them: the pipeline's stages run in-process on the
tiny smoke configuration (tests/fixtures/params-tiny.yaml) in a temporary directory, every
method with every seed of that configuration, so every train.json, metrics.json, curve,
prediction file and data/stats.json comes from the real writers, at the pipeline's paths
(models/{method}/seed{seed}, results/{method}/seed{seed})."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from cfqa import cli
from cfqa.config import PROJECT_ROOT, deep_merge
from cfqa.dag import LR_SELECTION, RUN_MODEL, RUN_RESULTS
from cfqa.layout import RunLayout

TINY_METHODS = ("full", "lora")


@dataclass(frozen=True)
class StageResults:
    root: Path
    params: Path
    methods: tuple[str, ...]
    seeds: tuple[int, ...]

    @property
    def layout(self) -> RunLayout:
        return RunLayout(str(self.root))

    @property
    def results(self) -> Path:
        return self.layout.results

    def run_dir(self, method: str, seed: int) -> Path:
        """The results directory of one (method, seed) run."""
        return self.layout.run_results(method, seed)

    def model_dir(self, method: str, seed: int) -> Path:
        """The trained directory of one (method, seed) run."""
        return self.layout.model(method, seed)

    @property
    def models(self) -> Path:
        return self.layout.models

    @property
    def data_stats(self) -> Path:
        return self.layout.data_stats

    @property
    def variants(self) -> Path:
        return self.layout.variants


@contextlib.contextmanager
def working_directory(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def tiny_params(methods: tuple[str, ...] = TINY_METHODS) -> dict:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    tiny = yaml.safe_load((PROJECT_ROOT / "tests/fixtures/params-tiny.yaml").read_text())
    merged = deep_merge(params, tiny)
    merged["methods"] = {name: merged["methods"][name] for name in methods}
    merged["tracking"]["experiment"] = "cfqa-stage-results"
    # Enough steps, and no empty/random contexts (whose "unanswerable" a tiny model first
    # answers everywhere), for answers to appear: the memorization classes (original /
    # substitute) are then populated and every field of the results is exercised.
    merged["train"].update(max_steps=400, eval_every=100, mixture=["factual", "counterfactual"])
    for block in merged["methods"].values():
        block.setdefault("train", {})["lr"] = 0.01
    # The tune stage runs for real; one grid point keeps the trained rate at 0.01 (5 steps of 400).
    merged["tune"].update(lr_factors=[1.0], trials=1, rungs=[0.0125])
    return merged


def stage(command: str, params: Path, *args: str) -> None:
    code = cli.main([command, "--params", str(params), *args])
    if code != 0:
        raise AssertionError(f"cfqa {command} {' '.join(args)} exited {code}")


def run_stages(root: Path, methods: tuple[str, ...] = TINY_METHODS, values: dict | None = None) -> StageResults:
    """download -> prepare -> entities -> counterfactuals -> pretrain -> train/evaluate per
    (method, seed), on `values` (default: the tiny params of `methods`)."""
    params = root / "params.yaml"
    values = tiny_params(methods) if values is None else values
    methods = tuple(values["methods"])
    seeds = tuple(values["seeds"])
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    with working_directory(root):
        stage("download", params, "--out", "data/raw")
        stage("prepare", params, "--raw", "data/raw", "--out", "data/prepared")
        stage("entities", params, "--prepared", "data/prepared", "--raw", "data/raw", "--out", "data/entities")
        stage("counterfactuals", params, "--prepared", "data/prepared", "--entities", "data/entities",
              "--out", "data/variants", "--stats", "data/stats.json")
        stage("pretrain", params, "--raw", "data/raw", "--out", "models/base", "--out-lm", "models/base_lm")
        for method in methods:
            selection = LR_SELECTION.format(method=method)
            stage("tune", params, "--method", method, "--variants", "data/variants", "--models", "models",
                  "--out", selection)
            for seed in seeds:
                model = RUN_MODEL.format(method=method, seed=seed)
                results = RUN_RESULTS.format(method=method, seed=seed)
                run = ("--method", method, "--seed", str(seed), "--variants", "data/variants", "--models", "models")
                stage("train", params, *run, "--out", model, "--results", results, "--lr-selection", selection)
                stage("evaluate", params, *run, "--model", model, "--results", results)
    return StageResults(root=root, params=params, methods=methods, seeds=seeds)
