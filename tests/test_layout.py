"""The run layout (cfqa.layout) names every path the DAG table declares, for the
default run root and a profile's: the table's stages (what Snakemake's rules and dvc.yaml are
made of) read and write exactly the layout's paths, and the paths are the ones every run so far
has written (results/{method}/seed{seed}, logs/benchmarks/..., models/.checkpoints/...)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cfqa.contract import MethodFiles
from cfqa.errors import BadInput
from cfqa.layout import RunLayout, checkpoint_dir, job_name, rooted, run_folder, seed_of, variant_file
from cfqa.dag import RUN_DIMS, RUN_RESULTS, RUN_ROOT_KEY, STAGES, fill, stage
from cfqa.dag.table import REPORT_FIGURES
from pipeline_support import PROJECT

METHOD, SEED = "lora", 3
# The default root and a profile's, as params.yaml and the profile name them.
ROOTS = (yaml.safe_load((PROJECT / "params.yaml").read_text()).get(RUN_ROOT_KEY) or ".",
         yaml.safe_load((PROJECT / "workflow/profiles/precise/params.yaml").read_text())[RUN_ROOT_KEY])


def declared(root: str) -> dict[tuple[str, str], str]:
    """(stage, name) -> path of every input, output, folder argument, log and benchmark of
    every stage of the table under `root`, filled for one method and seed."""
    wildcards = {"method": METHOD, "seed": str(SEED)}
    paths = {}
    for spec in STAGES:
        moved = spec.at(root)
        named = {**moved.inputs, **{key: o.path for key, o in moved.outputs.items()}, **moved.dirs,
                 "log": moved.log, "stderr_log": moved.stderr_log, "benchmark": moved.benchmark}
        paths.update({(spec.name, key): fill(path, wildcards) for key, path in named.items()})
    return paths


def named_by_layout(layout: RunLayout) -> dict[tuple[str, str], Path]:
    """What the layout calls each declared path."""
    run = MethodFiles(layout.run_results(METHOD, SEED))
    names = {
        ("validate", "stamp"): layout.validated, ("fetch", "fetched"): layout.fetched,
        ("download", "raw"): layout.raw, ("prepare", "prepared"): layout.prepared,
        ("entities", "entities"): layout.entities, ("counterfactuals", "variants"): layout.variants,
        ("counterfactuals", "stats"): layout.data_stats, ("pretrain", "base"): layout.base,
        ("pretrain", "base_lm"): layout.base_lm, ("tokenize", "tokenized"): layout.tokenized,
        ("tokenize", "models"): layout.models, ("tune", "selection"): layout.lr_selection(METHOD),
        ("train", "model"): layout.model(METHOD, SEED), ("train", "train"): run.train_record,
        ("train", "curve"): run.train_curve, ("train", "results"): layout.run_results(METHOD, SEED),
        ("train", "lr_selection"): layout.lr_selection(METHOD),
        ("evaluate", "model"): layout.model(METHOD, SEED), ("evaluate", "predictions"): run.predictions,
        ("evaluate", "per_question"): run.per_question, ("report", "per_question"): run.per_question,
        ("evaluate", "metrics"): run.metrics, ("evaluate", "headline"): run.headline,
        ("evaluate", "evaluation_run"): run.evaluation_run, ("report", "stats"): layout.data_stats,
        ("report", "html"): layout.report_html, ("report", "markdown"): layout.report_markdown,
        ("report", "summary"): layout.summary, ("report", "headline"): layout.run_headline,
        ("report", "results"): layout.results, ("report", "reports"): layout.reports,
        # Every figure, the one named "headline" too (beside the metric results/headline.json).
        **{("report", f"figure_{name}"): layout.report_figure(name) for name in REPORT_FIGURES},
    }
    for spec in STAGES:
        run_of = {d.name: {"method": METHOD, "seed": SEED}[d.name] for d in spec.dims}
        names[(spec.name, "log")] = layout.log(spec.name, **run_of)
        names[(spec.name, "stderr_log")] = layout.stderr_log(spec.name, **run_of)
        names[(spec.name, "benchmark")] = layout.benchmark(spec.name, **run_of)
    return names


@pytest.mark.parametrize("root", ROOTS)
def test_the_layout_names_every_path_the_dag_table_declares(root):
    assert ROOTS == (".", "runs/precise")
    table = declared(root)
    names = {key: path.as_posix() for key, path in named_by_layout(RunLayout(root)).items()}
    assert {key: table[key] for key in names} == names
    # Every path of the table is one the layout names (params.yaml is the project's, in no run).
    assert set(table.values()) - set(names.values()) == {"params.yaml"}


def test_the_paths_are_the_ones_runs_have_always_had():
    default, precise = RunLayout(), RunLayout("runs/precise")
    assert str(default.run_results("full", 0)) == "results/full/seed0"
    assert str(precise.model("lora", 2)) == "runs/precise/models/lora/seed2"
    assert str(MethodFiles(precise.run_results("lora", 2)).metrics) == "runs/precise/results/lora/seed2/metrics.json"
    assert str(precise.lr_selection("ia3")) == "runs/precise/results/ia3/lr_selection.json"
    assert str(precise.benchmark("train", "lora", 2)) == "runs/precise/logs/benchmarks/train/lora/seed2.tsv"
    assert str(precise.benchmark("pretrain")) == "runs/precise/logs/benchmarks/pretrain.tsv"
    assert str(default.checkpoints("lora", 1)) == "models/.checkpoints/lora/seed1"
    assert checkpoint_dir(Path("runs/x/models"), "full", 4) == Path("runs/x/models/.checkpoints/full/seed4")
    assert variant_file(precise.variants, "seen", "empty") == Path("runs/precise/data/variants/seen/empty.jsonl")
    assert precise.variant_file("train", "factual") == Path("runs/precise/data/variants/train/factual.jsonl")
    assert job_name("evaluate", "lora", 2) == "evaluate/lora/seed2" and job_name("report") == "report"
    assert rooted("params.yaml", "runs/precise") == "params.yaml"


def test_a_run_folder_is_named_by_the_dag_dimensions():
    assert RUN_RESULTS == "results/" + "/".join(d.segment for d in RUN_DIMS)
    assert run_folder("lora", 7) == "lora/seed7" and seed_of("seed7") == 7
    assert seed_of("seed") is None and seed_of("lr_selection.json") is None and seed_of("seed1x") is None
    assert stage("train").dims == RUN_DIMS


@pytest.mark.parametrize("root", ROOTS)
def test_a_stage_handed_only_the_results_folder_finds_the_run_root(root, tmp_path):
    layout = RunLayout(root)
    assert RunLayout.of_results(layout.results) == layout
    absolute = RunLayout(str(tmp_path / root))
    assert RunLayout.of_results(absolute.results).benchmark("train", "full", 0) == \
        tmp_path / root / "logs/benchmarks/train/full/seed0.tsv"
    with pytest.raises(BadInput, match=r"outputs: expected a run's results/ folder"):
        RunLayout.of_results(tmp_path / "outputs")
