"""The learning-rate search protocol on synthetic objectives (no training): it extends a grid
that does not bracket the optimum, spends the same trials on every method, resumes trials
from rung to rung, and decides at the last rung."""
from __future__ import annotations

import math

import pytest

from cfqa.training.lr_search import RungScore, SearchPlan, Trial, best, rung_steps, search

GRID = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)     # factors of 2 over 32x, as params.yaml
RUNGS = rung_steps((0.125, 0.25, 0.5), 1600)  # 200, 400, 800


def plan(trials: int = 9) -> SearchPlan:
    return SearchPlan(factors=GRID, trials=trials, rung_steps=RUNGS, keep_fraction=0.5)


class Objective:
    """EM peaks at `optimum` (a parabola in log2 lr) and grows with steps; records every call."""

    def __init__(self, optimum: float, diverge_above: float = math.inf, early_bias: float = 0.0):
        self.optimum, self.diverge_above, self.early_bias = optimum, diverge_above, early_bias
        self.calls: list[tuple[float, int]] = []

    def __call__(self, lr: float, steps: int) -> RungScore:
        self.calls.append((lr, steps))
        if lr > self.diverge_above:
            return RungScore(steps=steps, em_pct=None, loss=None)
        distance = math.log2(lr / self.optimum)
        # early_bias: at the first rung a larger rate looks better (it learns faster); the
        # advantage is gone by the last rung.
        speed = self.early_bias * math.log2(lr) * (RUNGS[-1] - steps) / RUNGS[-1]
        em = 90 - 8 * distance ** 2 - 2000 / steps + speed
        return RungScore(steps=steps, em_pct=em, loss=1 + distance ** 2 + 100 / steps)


@pytest.mark.parametrize("optimum", [20.0, 1 / 30])
def test_an_optimum_outside_the_initial_grid_is_found_by_extending_it(optimum):
    objective = Objective(optimum)
    result = search(1.0, plan(), objective)
    assert max(GRID) < optimum or optimum < min(GRID)            # outside the grid it starts from
    assert any(t.origin == "extension" for t in result.trials)
    assert abs(math.log2(result.chosen.lr / optimum)) <= 0.5     # within a factor of sqrt(2)
    assert result.chosen_inside
    low, high = result.searched_range
    assert low < optimum < high


def test_every_method_spends_the_same_trials_and_steps_wherever_its_optimum_is():
    budgets = []
    for optimum in (1.0, 0.3, 20.0, 1 / 30, 500.0):
        objective = Objective(optimum)
        result = search(1.0, plan(), objective)
        assert len(result.trials) == 9
        budgets.append(sum(steps - dict(objective.calls[:i]).get(lr, 0)
                           for i, (lr, steps) in enumerate(objective.calls)))
    assert set(budgets) == {plan().planned_steps} == {9 * 200 + 5 * 200 + 3 * 400}


def test_trials_resume_from_rung_to_rung_and_the_better_half_continues():
    objective = Objective(1.0)
    result = search(1.0, plan(), objective)
    per_rung = {steps: [lr for lr, s in objective.calls if s == steps] for steps in RUNGS}
    assert [len(per_rung[s]) for s in RUNGS] == [9, 5, 3]
    # each continuing trial is one of the best of the rung before
    first = sorted(result.trials, key=lambda t: -t.rungs[0].em_pct)
    assert set(per_rung[400]) == {t.lr for t in first[:5]}
    for trial in result.trials:
        assert [r.steps for r in trial.rungs] == list(RUNGS[:len(trial.rungs)])
    assert result.chosen.last.steps == RUNGS[-1]


def test_the_last_rung_decides_not_the_speed_of_the_first():
    # At the first rung the largest rate looks best; at the last the optimum (1.0) wins.
    objective = Objective(1.0, early_bias=12.0)
    result = search(1.0, plan(), objective)
    first_rung_best = max(result.trials, key=lambda t: t.rungs[0].em_pct)
    assert first_rung_best.lr > 1.0
    assert result.chosen.lr == 1.0 and result.chosen_inside


def test_diverged_trials_never_continue_and_bound_the_range_from_above():
    objective = Objective(3.0, diverge_above=3.0)
    result = search(1.0, plan(), objective)
    diverged = [t for t in result.trials if t.diverged]
    assert diverged and all(len(t.rungs) == 1 for t in diverged)
    assert not result.chosen.diverged and result.chosen.lr <= 3.0
    assert result.chosen_inside


def test_the_budget_bounds_the_extension_and_the_record_says_the_edge():
    objective = Objective(1e4)                                   # far beyond what 9 trials reach
    result = search(1.0, plan(), objective)
    assert len(result.trials) == 9
    assert result.chosen.lr == result.searched_range[1] and not result.chosen_inside


def test_a_plan_rejects_a_grid_larger_than_its_trials():
    with pytest.raises(ValueError, match="cannot hold"):
        SearchPlan(factors=GRID, trials=5, rung_steps=RUNGS, keep_fraction=0.5)
    assert rung_steps((0.125, 0.25, 0.5, 1.0), 1500) == (188, 375, 750, 1500)


def test_ties_go_to_the_rate_nearest_the_configured_one_then_the_smaller():
    def trial(lr: float, em: float | None, loss: float | None) -> Trial:
        return Trial(lr=lr, origin="grid", rungs=[RungScore(steps=200, em_pct=em, loss=loss)])

    same = [trial(0.0003, 50.0, 1.5), trial(0.001, 50.0, 1.5), trial(0.003, 50.0, 1.5)]
    assert best(same, 0.001).lr == 0.001
    assert best([same[0], same[2]], 0.001).lr == 0.003                     # ratio 3 beats 1/3.33
    assert best([trial(0.0003, 50.0, 1.2), same[1]], 0.001).lr == 0.0003    # EM tie: the lower loss
    assert best([trial(0.0003, 40.0, 0.1), same[1]], 0.001).lr == 0.001     # EM first
    assert best([trial(0.0003, None, None), trial(0.003, 0.0, 9.0)], 0.001).lr == 0.003   # diverged last
