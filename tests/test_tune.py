"""Stage `tune`: the learning-rate search per method on the validation set (the protocol
itself is tested on synthetic objectives in test_lr_search.py), and the train stage's use of
the chosen value."""
from __future__ import annotations

import dataclasses
import math

import msgspec
import pytest

from cfqa import config as config_module
from cfqa.config import TuneConfig
from cfqa.contract import ResultsError, read_lr_selection
from cfqa.stages import tune
from cfqa.training.lr_search import RungScore, SearchResult, Trial
from cfqa.training.lr_selection import apply_lr_selection

# stage_results trains 400 steps: rungs at 20 and 40 steps of that schedule; four trials (the
# three-point grid and one more), the better half continuing to the second rung.
FACTORS = (0.1, 1.0, 1000.0)
RUNGS = (0.05, 0.1)


def tune_config(**overrides) -> TuneConfig:
    values = dict(lr_factors=FACTORS, trials=4, rungs=RUNGS, keep_fraction=0.5, variant="counterfactual",
                  validation_examples=256, seed=0)
    return TuneConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def cfg(stage_results) -> config_module.Config:
    return dataclasses.replace(config_module.load([stage_results.params]), tune=tune_config())


@pytest.fixture(scope="module")
def selections(tmp_path_factory, stage_results, cfg) -> dict:
    """Method -> its selection file; `full` twice, to check the choice repeats."""
    out = tmp_path_factory.mktemp("tune")
    paths = {"full": out / "full" / "lr_selection.json", "full_again": out / "again" / "lr_selection.json",
             "lora": out / "lora" / "lr_selection.json"}
    for key, path in paths.items():
        tune.run(cfg, stage_results.variants, stage_results.models, path, key.removesuffix("_again"))
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_trials_on_the_real_schedule_and_the_best_at_the_last_rung_wins(selections, cfg, method):
    selection = read_lr_selection(selections[method], method)
    configured = cfg.methods[method].train.lr
    assert selection.method == method and selection.seed == 0
    assert selection.run.stage == "tune" and selection.run.params["tune"]["trials"] == 4
    assert selection.max_steps == cfg.methods[method].train.max_steps == 400
    assert selection.rung_steps == [20, 40]
    assert len(selection.trials) == 4
    assert [t.lr for t in selection.trials[:3]] == pytest.approx([configured * f for f in FACTORS])
    assert [t.origin for t in selection.trials[:3]] == ["grid"] * 3 and selection.trials[3].origin != "grid"
    for trial in selection.trials:
        assert [r.steps for r in trial.rungs] == selection.rung_steps[:len(trial.rungs)]
        if trial.status != "diverged":
            assert all(0 <= r.val_contextual_em_pct <= 100 and math.isfinite(r.val_loss) for r in trial.rungs)
    finalists = [t for t in selection.trials if t.status == "finalist"]
    assert len(finalists) == 2 and all(len(t.rungs) == 2 for t in finalists)
    # The finalists were the best two at the first rung; the best finalist at the last rung wins.
    first = sorted((t for t in selection.trials if t.status != "diverged"),
                   key=lambda t: (-t.rungs[0].val_contextual_em_pct, t.rungs[0].val_loss))
    assert {t.lr for t in finalists} == {t.lr for t in first[:2]}
    best = min(finalists, key=lambda t: (-t.rungs[-1].val_contextual_em_pct, t.rungs[-1].val_loss))
    assert selection.chosen_lr == best.lr
    tried = [t.lr for t in selection.trials]
    assert selection.searched_lr_range == [min(tried), max(tried)]
    assert selection.chosen_inside == (min(tried) < selection.chosen_lr < max(tried))
    # 1000 times the configured rate either blows up or does worse than the chosen one.
    huge = selection.trials[2]
    assert huge.status == "diverged" or huge.lr != selection.chosen_lr


@pytest.mark.slow
def test_the_selection_repeats_exactly(selections):
    first = msgspec.structs.asdict(read_lr_selection(selections["full"], "full"))
    again = msgspec.structs.asdict(read_lr_selection(selections["full_again"], "full"))
    first_run, again_run = first.pop("run"), again.pop("run")
    assert first == again   # trials, scores bit for bit, choice
    for key in ("params", "data_sha256", "backbone_sha256", "hardware"):
        assert getattr(first_run, key) == getattr(again_run, key)


@pytest.mark.slow
def test_train_takes_the_chosen_lr_and_refuses_another_methods_file(selections, cfg):
    chosen = read_lr_selection(selections["full"], "full").chosen_lr
    tuned = apply_lr_selection(cfg.methods["full"], selections["full"])
    assert tuned.train.lr == chosen
    assert dataclasses.replace(tuned.train, lr=cfg.methods["full"].train.lr) == cfg.methods["full"].train
    with pytest.raises(ResultsError, match=r"lr_selection\.json.*'full', not 'lora'"):
        apply_lr_selection(cfg.methods["lora"], selections["full"])


@pytest.mark.slow
def test_a_non_finite_loss_is_diverged_and_cannot_win(tmp_path, stage_results, cfg):
    # Adam's steps are ~lr whatever the gradient: at 1e30 the weights overflow float32.
    wild = dataclasses.replace(cfg, tune=tune_config(lr_factors=(1.0, 1e32), trials=2, rungs=(5 / 400,)))
    path = tmp_path / "lr_selection.json"
    tune.run(wild, stage_results.variants, stage_results.models, path, "full")
    kept, blown = read_lr_selection(path, "full").trials
    assert kept.status == "finalist" and [r.steps for r in kept.rungs] == [5]
    assert math.isfinite(kept.rungs[0].val_loss)
    assert blown.status == "diverged" and blown.rungs[0].val_contextual_em_pct is None
    assert blown.rungs[0].val_loss is None
    assert read_lr_selection(path, "full").chosen_lr == kept.lr


def test_a_missing_selection_file_names_the_command(tmp_path, cfg_default):
    with pytest.raises(ResultsError, match=r"missing\.json: missing; `cfqa tune --method full`"):
        apply_lr_selection(cfg_default.methods["full"], tmp_path / "missing.json")


@pytest.fixture(scope="module")
def cfg_default() -> config_module.Config:
    return config_module.load([config_module.PROJECT_ROOT / "params.yaml"])


def test_all_diverged_is_an_error_naming_the_keys():
    diverged = [Trial(lr=lr, origin="grid", rungs=[RungScore(steps=5, em_pct=None, loss=None)]) for lr in (0.5, 5.0)]
    with pytest.raises(FloatingPointError, match=r"'lora': every learning rate diverged.*methods\.lora\.train\.lr"):
        tune.chosen_or_error(SearchResult(trials=diverged, chosen=diverged[0]), "lora")
