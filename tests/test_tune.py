"""Stage `tune`: a learning-rate grid per method on the validation set, and the train
stage's use of the chosen value."""
from __future__ import annotations

import dataclasses
import math

import msgspec
import pytest

from cfqa import config as config_module
from cfqa.config import TuneConfig
from cfqa.contract import LrTrial, ResultsError, read_lr_selection
from cfqa.stages import tune
from cfqa.training.lr_selection import apply_lr_selection

# 40 steps: shorter runs (half of them warmup) favour large rates on the tiny model.
FACTORS = (0.1, 1.0, 1000.0)
STEPS = 40


@pytest.fixture(scope="module")
def cfg(stage_results) -> config_module.Config:
    loaded = config_module.load([stage_results.params])
    return dataclasses.replace(loaded, tune=TuneConfig(lr_factors=FACTORS, max_steps=STEPS, validation_examples=256, seed=0))


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
def test_one_trial_per_factor_and_the_lowest_validation_loss_wins(selections, cfg, method):
    selection = read_lr_selection(selections[method], method)
    configured = cfg.methods[method].train.lr
    assert selection.method == method and selection.seed == 0
    assert selection.run.stage == "tune" and selection.run.params["tune"]["max_steps"] == STEPS
    assert [t.lr for t in selection.trials] == pytest.approx([configured * f for f in FACTORS])
    finite = [t for t in selection.trials if t.status != "diverged"]
    assert finite, "every learning rate diverged"
    for trial in finite:
        assert trial.steps == STEPS and trial.status == "completed"
        assert trial.best_val_loss is not None and math.isfinite(trial.best_val_loss)
    best = min(finite, key=lambda t: t.best_val_loss)
    assert selection.chosen_lr == best.lr
    # 1000 times the configured rate either blows up or does worse than the chosen one.
    huge = selection.trials[-1]
    assert huge.status == "diverged" or huge.best_val_loss > best.best_val_loss
    assert selection.chosen_lr != huge.lr


@pytest.mark.slow
def test_the_selection_repeats_exactly(selections):
    first = msgspec.structs.asdict(read_lr_selection(selections["full"], "full"))
    again = msgspec.structs.asdict(read_lr_selection(selections["full_again"], "full"))
    first_run, again_run = first.pop("run"), again.pop("run")
    assert first == again   # trials, losses bit for bit, choice
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
    wild = dataclasses.replace(cfg, tune=TuneConfig(lr_factors=(1.0, 1e32), max_steps=5, validation_examples=256, seed=0))
    path = tmp_path / "lr_selection.json"
    tune.run(wild, stage_results.variants, stage_results.models, path, "full")
    kept, blown = read_lr_selection(path, "full").trials
    assert kept.status == "completed" and kept.steps == 5 and math.isfinite(kept.best_val_loss)
    assert blown.status == "diverged" and blown.best_val_loss is None and 1 <= blown.steps < 5
    assert read_lr_selection(path, "full").chosen_lr == kept.lr


def test_a_missing_selection_file_names_the_command(tmp_path, cfg_default):
    with pytest.raises(ResultsError, match=r"missing\.json: missing; `cfqa tune --method full`"):
        apply_lr_selection(cfg_default.methods["full"], tmp_path / "missing.json")


@pytest.fixture(scope="module")
def cfg_default() -> config_module.Config:
    return config_module.load([config_module.PROJECT_ROOT / "params.yaml"])


def trial(lr: float, loss: float | None) -> LrTrial:
    return LrTrial(lr=lr, steps=STEPS, best_val_loss=loss, status="completed" if loss is not None else "diverged")


def test_ties_go_to_the_lr_nearest_the_configured_one():
    trials = [trial(0.0003, 1.5), trial(0.001, 1.5), trial(0.003, 1.5)]
    assert tune.choose(trials, 0.001, "full").lr == 0.001
    assert tune.choose([trials[0], trials[2]], 0.001, "full").lr == 0.003   # ratio 3 beats 1/3.33
    assert tune.choose([trial(0.0003, 1.2), trial(0.001, 1.5), trial(0.003, None)], 0.001, "full").lr == 0.0003


def test_all_diverged_is_an_error_naming_the_keys():
    with pytest.raises(FloatingPointError, match=r"'lora': every learning rate diverged.*methods\.lora\.train\.lr"):
        tune.choose([trial(0.5, None), trial(5.0, None)], 0.5, "lora")


def test_validation_sample_is_fixed_by_the_seed_and_keeps_file_order():
    examples = [([i], [i]) for i in range(1000)]
    sample = tune.validation_sample(examples, 100, seed=0)
    assert sample == tune.validation_sample(examples, 100, seed=0)
    assert len(sample) == 100 and sample == sorted(sample)
    assert sample != tune.validation_sample(examples, 100, seed=1)
    assert tune.validation_sample(examples[:50], 100, seed=0) == examples[:50]
