"""Comparing runs with DVC: results/headline.json (per method, seed means and an interval) is
what `dvc metrics show/diff` list, with real old values across commits, while each run's
headline.json and curve stay in git as data; `dvc plots show` draws every run's training curve
in one figure, one colour per method with a mean line, on a page that loads no script from the
network. Result files are written by the contract's writers into a copy of the project (no
pipeline run: seconds)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cfqa.contract import CurveRow, Headline, MethodFiles, write_curve, write_record, write_run_headline
from cfqa.dag import RUN_RESULTS
from cfqa.analysis.headline import run_headline
from pipeline_support import PROJECT, commit_all, run_tool
from project_copy import copy_project

METHODS = ("full", "lora")
SEEDS = (0, 1)


def headline(em: float, params: int) -> Headline:
    return Headline(test_contextual_em_pct={"factual": em, "counterfactual": em / 2, "empty": 90.0, "random": 80.0},
                    memorization_ratio_pct={"test": 12.5, "seen": 40.0}, trainable_params=params,
                    peak_memory_bytes=1 << 20, step_time_s=0.25)


def write_run(root: Path, method: str, seed: int, em: float, loss: float) -> Headline:
    files = MethodFiles(root / RUN_RESULTS.format(method=method, seed=seed))
    files.directory.mkdir(parents=True, exist_ok=True)
    record = headline(em, 1000 if method == "lora" else 50000)
    write_record(files.headline, record)
    write_curve(files.train_curve, [CurveRow(step=step, train_loss=loss / step, val_loss=None)
                                    for step in (1, 2, 3)])
    # Detail git must not hold (DVC caches it).
    files.metrics.write_text("{}")
    files.predictions.write_text("")
    return record


def write_results(root: Path, em: dict[str, float], loss: dict[str, float]) -> None:
    """Every (method, seed) run, seed 1 two points above seed 0, and the report's
    results/headline.json over them."""
    runs = {method: [write_run(root, method, seed, em[method] + 2 * seed, loss[method] * (1 + seed / 10))
                     for seed in SEEDS] for method in METHODS}
    write_run_headline(root / "results" / "headline.json", run_headline(runs))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Two commits of a two-method project whose results differ: lora's EM 50 -> 75."""
    root = copy_project(tmp_path_factory.mktemp("compare") / "cfqa")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["methods"] = {name: params["methods"][name] for name in METHODS}
    params["seeds"] = list(SEEDS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_tool([sys.executable, "-m", "cfqa.dag", "--write", "dvc.yaml"], root)
    write_results(root, em={"full": 60.0, "lora": 50.0}, loss={"full": 2.0, "lora": 2.0})
    commit_all(root, "first results")
    write_results(root, em={"full": 60.0, "lora": 75.0}, loss={"full": 2.0, "lora": 1.0})
    commit_all(root, "lora improved")
    return root


def test_git_holds_the_metric_headlines_and_curves_not_the_detail(project):
    tracked = set(run_tool(["git", "ls-files", "results"], project).stdout.split())
    assert tracked == {"results/headline.json"} | {f"results/{m}/seed{s}/{name}" for m in METHODS for s in SEEDS
                                                   for name in ("headline.json", "train_curve.csv")}


def test_metrics_show_lists_the_seed_means_of_each_method(project):
    shown = json.loads(run_tool(["dvc", "metrics", "show", "--json"], project).stdout)
    files = shown[""]["data"]          # "": the workspace
    assert set(files) == {"results/headline.json"}
    # Counterfactual EM is half the factual: lora's seeds 37.5 and 38.5, t-interval with 1 df.
    assert files["results/headline.json"]["data"]["lora"] == {"cf_em%": 38.0, "cf_em%±": 6.4, "f_em%": 76.0}
    table = run_tool(["dvc", "metrics", "show"], project).stdout
    assert "lora.cf_em%" in table and "lora.cf_em%±" in table


def test_metrics_diff_between_commits_has_old_and_new_values(project):
    diff = json.loads(run_tool(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], project).stdout)
    lora = {key: value for key, value in diff["results/headline.json"].items() if key.startswith("lora.")}
    assert lora == {"lora.cf_em%": {"old": 25.5, "new": 38.0, "diff": 12.5},
                    "lora.f_em%": {"old": 51.0, "new": 76.0, "diff": 25.0}}
    # Unchanged values are left out: full's, and the interval (same seed spread).
    assert not [key for key in diff["results/headline.json"] if key.startswith("full.")]


def test_plots_show_draws_one_offline_figure_coloured_by_method(project, tmp_path):
    run_tool(["dvc", "plots", "show", "--out", str(tmp_path / "plots")], project)
    page = (tmp_path / "plots" / "index.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", page), "a script is loaded from outside the page"
    assert "cdn.jsdelivr" not in page
    # The template's inline libraries, and one figure holding every run's curve.
    assert "vegaEmbed=" in page.replace(" ", "") and page.count("vegaEmbed('#") == 1
    spec = json.loads(re.search(r"var spec = (\{.*?\});\s*vegaEmbed", page, re.S).group(1))
    # DVC names each line by its file, less the prefix all share ("results/").
    sources = {row["filename"] for row in spec["data"]["values"]}
    assert sources == {f"{m}/seed{s}/train_curve.csv" for m in METHODS for s in SEEDS}
    # workflow/dvc_plots/by_method.json: the method and seed come from the path; one colour per
    # method, each seed a thin line, the seed mean a thick one, dashes per revision.
    method, seed = (next(t["calculate"] for t in spec["transform"] if t["as"] == name) for name in ("method", "seed"))
    assert "length(datum.path_parts) - 3" in method and "length(datum.path_parts) - 2" in seed
    assert spec["encoding"]["color"]["field"] == "method" and spec["encoding"]["strokeDash"]["field"] == "rev"
    seeds, mean = spec["layer"]
    assert seeds["encoding"]["detail"]["field"] == "seed" and seeds["mark"]["strokeWidth"] < mean["mark"]["strokeWidth"]
    (aggregate,) = mean["transform"]
    assert aggregate["aggregate"][0] == {"op": "mean", "field": "y_value", "as": "y_value"}
    assert aggregate["groupby"] == ["method", "rev", "x_value"]
    assert "toNumber(datum['train_loss'])" in json.dumps(spec["transform"])


def test_plots_diff_draws_both_commits(project, tmp_path):
    run_tool(["dvc", "plots", "diff", "HEAD~1", "HEAD", "--out", str(tmp_path / "plots")], project)
    page = (tmp_path / "plots" / "index.html").read_text()
    spec = json.loads(re.search(r"var spec = (\{.*?\});\s*vegaEmbed", page, re.S).group(1))
    lora = {(row["rev"], row["step"], row["train_loss"]) for row in spec["data"]["values"]
            if row["filename"] == "lora/seed0/train_curve.csv"}
    assert {("HEAD~1", "1", "2.0"), ("HEAD", "1", "1.0")} <= lora


def test_committed_template_is_the_one_dvc_uses():
    config = (PROJECT / ".dvc" / "config").read_text()
    assert re.search(r"html_template = \.\./workflow/dvc_plots/offline\.html", config)
    template = (PROJECT / "workflow" / "dvc_plots" / "offline.html").read_text()
    assert "{plot_divs}" in template and "{scripts}" not in template
    for library in ("vega 5.20.2", "vega-lite 5.2.0", "vega-embed 6.18.2"):
        assert f"<!-- {library} " in template


def test_default_remote_is_a_folder_beside_the_project(project):
    remotes = run_tool(["dvc", "remote", "list"], project).stdout.split()
    assert remotes[0] == "local" and Path(remotes[1]).resolve() == (project.parent / "cfqa-dvc-remote")
    # A checkout points it elsewhere in .dvc/config.local, which git does not hold.
    run_tool(["dvc", "remote", "modify", "--local", "local", "url", "/elsewhere"], project)
    try:
        assert run_tool(["dvc", "remote", "list"], project).stdout.split()[1] == "/elsewhere"
        assert subprocess.run(["git", "check-ignore", "-q", ".dvc/config.local"], cwd=project).returncode == 0
    finally:
        (project / ".dvc" / "config.local").unlink()
