"""Real result files for tests that read them: the pipeline's stages run in-process on the
tiny smoke configuration (tests/fixtures/params-tiny.yaml) in a temporary directory, every
method with every seed of that configuration, so every train.json, metrics.json, curve,
prediction file and data/stats.json comes from the real writers, at the pipeline's paths
(models/{method}/seed{seed}, results/{method}/seed{seed}). Each job's command line is the
stage table's (cfqa.dag.arguments, as both engines build it), in the table's order."""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from filelock import FileLock

from cfqa import cli
from cfqa.config import PROJECT_ROOT, deep_merge
from cfqa.dag import STAGES, arguments
from cfqa.dag import stage as dag_stage
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


def tiny_config(methods: tuple[str, ...] = TINY_METHODS) -> dict:
    """params.yaml with the tiny overrides (tests/fixtures/params-tiny.yaml), holding only
    `methods`: the configuration every end-to-end test starts from."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    tiny = yaml.safe_load((PROJECT_ROOT / "tests/fixtures/params-tiny.yaml").read_text())
    merged = deep_merge(params, tiny)
    merged["methods"] = {name: merged["methods"][name] for name in methods}
    return merged


def tiny_params(methods: tuple[str, ...] = TINY_METHODS) -> dict:
    merged = tiny_config(methods)
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


# The stages run_stages leaves out: the report reads every run; tests that need it run it.
LEFT_OUT = ("report",)


def stage_command(name: str, params: Path | list[Path], leave_out: tuple[str, ...] = (), **wildcards: object) -> list[str]:
    """`cfqa` arguments of one job of stage `name` (`wildcards`: its method and seed), its paths
    relative to the run root, built from the stage table as both engines build them; the
    optional options named in `leave_out` (flags, as a user running it by hand may)."""
    spec = dag_stage(name)
    optional = {option.flag for option in spec.options if not option.required}
    assert set(leave_out) <= optional, f"{name}: only optional options can be left out, not {set(leave_out) - optional}"
    values = {key: str(value) for key, value in wildcards.items()}
    args = arguments(spec, spec.named_paths(values), values)
    pairs = [args[i:i + 2] for i in range(0, len(args), 2)]
    kept = [part for flag, value in pairs if flag[2:] not in leave_out for part in (flag, value)]
    files = params if isinstance(params, list) else [params]
    return [name, *(part for path in files for part in ("--params", str(path))), *kept]


def run_stage(name: str, params: Path | list[Path], leave_out: tuple[str, ...] = (), **wildcards: object) -> None:
    argv = stage_command(name, params, leave_out, **wildcards)
    code = cli.main(argv)
    if code != 0:
        raise AssertionError(f"cfqa {' '.join(argv)} exited {code}")


def run_stages(root: Path, methods: tuple[str, ...] = TINY_METHODS, values: dict | None = None) -> StageResults:
    """Every stage of the table but the report, each job of it (per method, per run) in the
    table's order, on `values` (default: the tiny params of `methods`)."""
    params = root / "params.yaml"
    values = tiny_params(methods) if values is None else values
    methods = tuple(values["methods"])
    seeds = tuple(values["seeds"])
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    with working_directory(root):
        for spec in STAGES:
            if spec.name in LEFT_OUT:
                continue
            for job in itertools.product(*(dim.values(values) for dim in spec.dims)):
                run_stage(spec.name, params, **dict(zip((dim.name for dim in spec.dims), job)))
    return StageResults(root=root, params=params, methods=methods, seeds=seeds)


# Written last into a shared stage-results directory: the run in it finished.
FINISHED = ".finished"


def shared_run_stages(root: Path) -> StageResults:
    """run_stages into `root` once for every process of a test run: the first to ask runs them
    while holding `root`.lock, the others wait and read its files. pytest-xdist gives each
    worker its own session, so a session fixture alone would run the stages once per worker."""
    with FileLock(f"{root}.lock"):
        if not (root / FINISHED).is_file():
            if root.exists():                   # a run cut short: start again
                shutil.rmtree(root)
            root.mkdir(parents=True)
            run_stages(root)
            (root / FINISHED).touch()
    values = yaml.safe_load((root / "params.yaml").read_text())
    return StageResults(root=root, params=root / "params.yaml", methods=tuple(values["methods"]),
                        seeds=tuple(values["seeds"]))
