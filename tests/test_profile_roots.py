"""Each params profile writes under its own run root (`run_root`), never over the default run's
files: the stage table moves every path there, a dry run of each profile lists only paths
under its root, and the default run's paths stay where they were. A real run of a params file
with its own root, which writes nothing outside it but the state every run shares, is the
README's cluster steps' run in tests/test_slurm_cluster.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cfqa.config import PROJECT_ROOT, deep_merge, load
from cfqa.dag import METHOD, PARAMS_FILE, RUN_ROOT_KEY, STAGES, compared_summaries, rooted, run_root
from cfqa.dag.dvc_yaml import dvc_document
from cfqa.layout import RunLayout
from pipeline_support import DEFAULT_FOLDERS, PROJECT, run_tool
from project_copy import copy_project

PROFILES = sorted(path.parent.name for path in (PROJECT / "workflow" / "profiles").glob("*/params.yaml"))


def default_params() -> dict:
    return yaml.safe_load((PROJECT / PARAMS_FILE).read_text())


def profile_params(name: str) -> dict:
    return yaml.safe_load((PROJECT / "workflow" / "profiles" / name / "params.yaml").read_text())


def stage_paths(spec) -> list[str]:
    return [*spec.inputs.values(), *(o.path for o in spec.outputs.values()), *spec.dirs.values(),
            spec.log, spec.stderr_log, spec.benchmark]


# ---- the stage table -------------------------------------------------------------------

def test_a_run_root_moves_every_path_of_every_stage_but_params_yaml():
    for spec in STAGES:
        moved = spec.at("runs/x")
        for path in stage_paths(moved):
            assert path == PARAMS_FILE or path.startswith("runs/x/"), (spec.name, path)
        assert [p.removeprefix("runs/x/") for p in stage_paths(moved)] == stage_paths(spec), spec.name


def test_the_default_root_leaves_every_path_as_written():
    assert run_root(default_params()) == "." and run_root({RUN_ROOT_KEY: "runs/x"}) == "runs/x"
    for spec in STAGES:
        assert stage_paths(spec.at(".")) == stage_paths(spec)
        assert spec.log.startswith("logs/") and spec.benchmark.startswith("logs/benchmarks/")
    assert rooted(PARAMS_FILE, "runs/x") == PARAMS_FILE


def test_the_report_waits_for_the_runs_it_compares_never_its_own():
    params = {**default_params(), RUN_ROOT_KEY: "runs/x",
              "report": {"notes": [], "compare_runs": [".", "runs/x", "runs/other"]}}
    assert compared_summaries(params) == ["results/summary.json", "runs/other/results/summary.json"]
    assert compared_summaries(default_params()) == []
    deps = dvc_document(params)["stages"]["report"]["deps"]
    assert {"results/summary.json", "runs/other/results/summary.json"} <= set(deps)
    assert "runs/x/results/summary.json" not in deps
    assert "results/summary.json" not in dvc_document(default_params())["stages"]["report"]["deps"]


def test_dvc_yaml_generated_with_a_run_root_names_only_paths_under_it():
    params = {**default_params(), RUN_ROOT_KEY: "runs/x"}
    document = dvc_document(params)
    for name, entry in document["stages"].items():
        body = entry.get("do", entry)
        paths = [*body["deps"], *(next(iter(o)) if isinstance(o, dict) else o
                                  for section in ("outs", "metrics") for o in body.get(section, []))]
        for path in paths:
            assert path.startswith(("runs/x/", "workflow/")) or path == PARAMS_FILE, (name, path)
        tokens = [t for t in body["cmd"].split() if "/" in t]
        assert tokens and all(t.startswith("runs/x/") for t in tokens), (name, body["cmd"])
    (plot,) = document["plots"]
    assert all(path.startswith("runs/x/results/") for path in plot["training_loss"]["y"])


# ---- the profiles ----------------------------------------------------------------------

def test_every_params_profile_has_its_own_root_and_mlflow_experiment():
    assert {"mixtures", "gpt-neo-125m", "disentqa-t5-large"} <= set(PROFILES)
    roots = {name: profile_params(name).get(RUN_ROOT_KEY) for name in PROFILES}
    assert roots == {name: f"runs/{name}" for name in PROFILES}
    experiments = [deep_merge(default_params(), profile_params(name))["tracking"]["experiment"] for name in PROFILES]
    assert len(set(experiments)) == len(PROFILES) and default_params()["tracking"]["experiment"] not in experiments


def test_the_mixtures_profile_runs_full_fine_tuning_with_four_mixtures_only():
    merged = deep_merge(default_params(), profile_params("mixtures"))
    methods = METHOD.values(merged)
    assert methods == ["full", "full_f", "full_fcf", "full_fa"]
    mixtures = {m: tuple(((merged["methods"][m].get("train") or {}).get("mixture") or merged["train"]["mixture"]))
                for m in methods}
    assert mixtures == {"full": ("factual", "counterfactual", "empty", "random"), "full_f": ("factual",),
                        "full_fcf": ("factual", "counterfactual"), "full_fa": ("factual", "empty", "random")}


def test_the_mixtures_share_one_learning_rate_and_see_their_factual_rows_equally_often():
    cfg = load([PROJECT_ROOT / "params.yaml", PROJECT_ROOT / "workflow/profiles/mixtures/params.yaml"])
    # rows per factual row: one of each variant, and several counterfactuals per question
    rows = {"factual": 1, "counterfactual": cfg.counterfactuals.train_counterfactuals_per_question,
            "empty": 1, "random": 1}
    assert len({m.train.lr for m in cfg.methods.values()}) == 1
    assert cfg.tune.lr_factors == (1.0,) and cfg.tune.trials == 1       # the rate as given, for every mixture
    passes = {name: m.train.max_steps * m.train.batch_size / sum(rows[v] for v in m.train.mixture)
              for name, m in cfg.methods.items()}   # factual passes per factual row, up to their count
    assert len(set(passes.values())) == 1, passes


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("profiles"))


def dry_run_paths(project: Path, *configfiles: str) -> tuple[set[str], list[str]]:
    """The paths a dry run lists for its jobs (inputs, outputs, logs, benchmarks), and the
    words of its shell commands that are paths."""
    args = [arg for f in configfiles for arg in ("--configfile", f)]
    out = run_tool(["snakemake", "--dry-run", "--forceall", "--printshellcmds", "--cores", "1", *args],
                   project).stdout
    paths, words = set(), []
    for line in out.splitlines():
        field, _, value = line.strip().partition(": ")
        if field in ("input", "output", "log", "benchmark"):
            paths.update(p.strip() for p in value.split(","))
        elif field == "Shell command":   # the stage's command: what follows cfqa.launch's `--`
            words += [w for w in value.split(" -- ", 1)[-1].split() if "/" in w]
    assert words, out[-2000:]
    return paths, words


@pytest.mark.parametrize("profile", PROFILES)
def test_a_dry_run_of_a_profile_lists_only_paths_under_its_root(project, profile):
    configfile = f"workflow/profiles/{profile}/params.yaml"
    # A run the profile's report sets beside its own must have finished: it is read, never written.
    compared = set(compared_summaries(deep_merge(default_params(), profile_params(profile))))
    for path in compared:
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text("{}")
    paths, words = dry_run_paths(project, configfile)
    params_files = {PARAMS_FILE, configfile, str(project / configfile)}
    root = f"runs/{profile}/"
    assert {p for p in paths if not p.startswith(root)} == (params_files & paths) | compared
    assert {w for w in words if not w.startswith(root)} == {configfile}     # `--params` of the CLI
    for folder in DEFAULT_FOLDERS:
        assert f"{root}{folder}" in {"/".join(p.split("/")[:3]) for p in paths}, folder
    assert layout_paths(RunLayout(root.rstrip("/")), deep_merge(default_params(), profile_params(profile))) <= paths


def layout_paths(layout: RunLayout, params: dict) -> set[str]:
    """Paths the run layout names for the first method and seed of `params`: the ones a dry run
    of Snakemake must list (as the rules' inputs, outputs, logs and benchmarks)."""
    method, seed = METHOD.values(params)[0], params["seeds"][0]
    named = [layout.raw, layout.variants, layout.data_stats, layout.base, layout.tokenized,
             layout.lr_selection(method), layout.model(method, seed), layout.run_results(method, seed) / "metrics.json",
             layout.summary, layout.run_headline, layout.report_html, layout.report_figure("headline"),
             layout.log("train", method, seed), layout.stderr_log("train", method, seed),
             layout.benchmark("train", method, seed), layout.benchmark("evaluate", method, seed),
             layout.benchmark("pretrain"), layout.log("tune", method), layout.stderr_log("report")]
    return {path.as_posix() for path in named}


def test_the_default_run_keeps_its_paths(project):
    paths, words = dry_run_paths(project)
    assert layout_paths(RunLayout(), default_params()) <= paths
    assert not [p for p in paths | set(words) if p.startswith("runs/")]
    assert {"data/raw", "models/base", "results/lora/seed0/metrics.json", "reports/index.html",
            "logs/train/lora/seed0.log", "logs/train/lora/seed0.stderr.log",
            "logs/benchmarks/train/lora/seed0.tsv"} <= paths


def test_the_precise_profile_has_the_seeds_a_five_point_difference_needs_at_the_measured_spread():
    """The seed count follows from the recorded seed-variance study: per-seed SD of full minus
    LoRA at the tuned rate, paired t with Holm over the 8 comparisons with full fine-tuning."""
    from cfqa.analysis.statistics import seeds_needed
    study = json.loads((PROJECT / "benchmarks/results/seed_variance.json").read_text())
    (paired,) = [p for p in study["paired_with_full"] if (p["recipe"], p["rule"]) == ("half_lr", "best_val_loss")]
    sd = paired["full_minus_method"]["sd_pct"]
    compared = len(load([PROJECT_ROOT / "params.yaml"]).methods) - 1
    precise = load([PROJECT_ROOT / "params.yaml", PROJECT_ROOT / "workflow/profiles/precise/params.yaml"])
    assert len(precise.seeds) == seeds_needed(5.0, seed_sd=sd, tests=compared)
