"""results/headline.json, the run root's DVC metric: per method the seed mean of the test
contextual EM on counterfactual and factual contexts, and the half-width of the
counterfactual EM's t-interval over seeds (n - 1 degrees of freedom)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cfqa import config as config_module
from cfqa.contract import Headline, MethodHeadline, read_headline, read_run_headline, write_run_headline
from cfqa.analysis.headline import method_headline, run_headline, seed_interval
from cfqa.stages import report as report_stage

T_975_2DF = 4.302652729911275      # Student's t, 97.5 % quantile, 2 degrees of freedom (tables)


def run(counterfactual: float | None, factual: float | None = 80.0) -> Headline:
    return Headline(test_contextual_em_pct={"factual": factual, "counterfactual": counterfactual, "empty": 90.0},
                    memorization_ratio_pct={"test": 10.0}, trainable_params=1000, peak_memory_bytes=None,
                    step_time_s=0.1)


def test_seed_interval_is_the_t_interval_with_n_minus_one_degrees_of_freedom():
    mean, half = seed_interval([60.0, 62.0, 64.0])          # sd 2, n 3
    assert mean == 62.0
    assert half == pytest.approx(T_975_2DF * 2.0 / math.sqrt(3), rel=1e-9)
    assert seed_interval([70.0]) == (70.0, None)             # one seed: no spread to estimate
    with pytest.raises(ValueError, match="no values"):
        seed_interval([])


def test_seed_interval_covers_the_mean_at_its_level_with_three_seeds():
    """Normal seeds, 3 per experiment: the 95 % interval holds the true mean in 95 % of 4,000
    simulated experiments (binomial SD 0.34 %)."""
    rng = np.random.default_rng(0)
    covered = 0
    for sample in rng.normal(50.0, 5.0, size=(4000, 3)):
        mean, half = seed_interval(sample.tolist())
        covered += abs(mean - 50.0) <= half
    assert covered / 4000 == pytest.approx(0.95, abs=0.012)


def test_a_method_s_entry_rounds_to_a_tenth_and_leaves_out_what_a_seed_lacks():
    entry = method_headline([run(60.0, 80.0), run(62.0, 81.0), run(64.0, 85.0)])
    assert entry == MethodHeadline(cf_em_pct=62.0, cf_em_half_width_pct=5.0, f_em_pct=82.0)
    # A seed without counterfactual examples: no mean over the other seeds alone.
    assert method_headline([run(60.0), run(None)]).cf_em_pct is None
    assert method_headline([run(60.0)]) == MethodHeadline(cf_em_pct=60.0, cf_em_half_width_pct=None, f_em_pct=80.0)
    with pytest.raises(ValueError, match=r"no runs of \['lora'\]"):
        run_headline({"full": [run(60.0)], "lora": []})


def test_the_file_holds_three_short_keys_per_method_and_reads_back(tmp_path):
    methods = run_headline({"full": [run(70.0), run(72.0)], "lora": [run(50.0), run(54.0)]})
    path = tmp_path / "headline.json"
    write_run_headline(path, methods)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert list(raw) == ["full", "lora"]                     # params.yaml's order; nothing else
    # 50 and 54: sd 2·√2, t(97.5 %, 1 df) 12.706: half-width 12.706 · 2√2 / √2 = 25.4.
    assert raw["lora"] == {"cf_em%": 52.0, "cf_em%±": 25.4, "f_em%": 80.0}
    assert read_run_headline(path) == methods


@pytest.mark.slow
def test_the_report_stage_writes_the_seed_means_of_each_run_s_headline(stage_results, tmp_path):
    cfg = config_module.load([stage_results.params])
    path = tmp_path / "headline.json"
    report_stage.run(cfg, results=stage_results.results, data_stats=stage_results.data_stats,
                     out=tmp_path / "reports", summary=tmp_path / "summary.json", headline=path)
    written = read_run_headline(path)
    assert list(written) == list(stage_results.methods)
    for method in stage_results.methods:
        runs = [read_headline(stage_results.run_dir(method, seed) / "headline.json") for seed in stage_results.seeds]
        counterfactual = [r.test_contextual_em_pct["counterfactual"] for r in runs]
        mean, half = seed_interval(counterfactual)
        assert written[method].cf_em_pct == round(mean, 1)
        assert written[method].cf_em_half_width_pct == round(half, 1)
        assert written[method].f_em_pct == round(np.mean([r.test_contextual_em_pct["factual"] for r in runs]), 1)
