"""Learning-rate search that brackets its optimum: a log grid, extended while its best point
is at an edge, then successive halving on the real schedule.

Every trial follows the schedule of a full training run (warmup, then the decay to zero at
`train.max_steps`) and is compared at rungs, fractions of that run (e.g. 1/8, 1/4, 1/2): after
each rung but the last, the better part of the trials continue from where they stopped
(resumed, never restarted) and the rest are dropped. A schedule compressed into a short run
decays to zero early and favours whichever rate learns fastest, so the largest rate of a grid
won; on the real schedule a rate is judged at the point of the run it will train in.

The number of trials is the same for every method (`tune.trials`): first the initial grid;
then, while the best trial at the first rung is at an edge of the rates tried so far, one
more rate beyond that edge (the grid's spacing again); then rates halfway (geometrically)
between the best rate and its better neighbour. So a grid that does not bracket its optimum
is extended until it does or the trials run out, and the selection record says whether the
chosen rate is inside the searched range.

Trials are ranked by validation contextual EM (higher is better), then validation loss (lower),
then the rate nearer the configured one, then the smaller rate; a diverged trial ranks last
and never continues. Pure logic: `search` calls `advance(lr, steps)` to train a trial to a
rung and score it, so a synthetic objective can test the protocol without training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

ORIGINS = ("grid", "extension", "refinement")


@dataclass(frozen=True)
class RungScore:
    """A trial scored at a rung; em_pct and loss are None once it diverged."""
    steps: int
    em_pct: float | None
    loss: float | None

    @property
    def diverged(self) -> bool:
        return self.em_pct is None or self.loss is None or not math.isfinite(self.loss)


@dataclass
class Trial:
    lr: float
    origin: str                                   # grid | extension | refinement
    rungs: list[RungScore] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return any(score.diverged for score in self.rungs)

    @property
    def last(self) -> RungScore:
        return self.rungs[-1]


@dataclass(frozen=True)
class SearchPlan:
    """What every method's search spends: `trials` rates, scored at `rung_steps`; after each
    rung but the last, `keep_fraction` of the trials still running continue (at least one)."""
    factors: tuple[float, ...]                    # the initial grid, times the configured lr
    trials: int
    rung_steps: tuple[int, ...]
    keep_fraction: float

    def __post_init__(self):
        if not self.factors or (len(self.factors) == 1 and self.trials > 1):
            raise ValueError(f"extending a grid needs at least 2 factors, got {list(self.factors)}")
        if self.trials < len(self.factors):
            raise ValueError(f"{self.trials} trials cannot hold the {len(self.factors)}-point initial grid")
        if not self.rung_steps or list(self.rung_steps) != sorted(set(self.rung_steps)) or self.rung_steps[0] < 1:
            raise ValueError(f"rung steps must increase from >= 1, got {list(self.rung_steps)}")
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")

    @property
    def planned_steps(self) -> int:
        """Training steps of the whole search when no trial diverges: the same for every method."""
        running, total, previous = self.trials, 0, 0
        for index, steps in enumerate(self.rung_steps):
            if index:
                running = max(1, math.ceil(running * self.keep_fraction))
            total += running * (steps - previous)
            previous = steps
        return total

    @property
    def spacing(self) -> float:
        """The grid's smallest ratio between neighbours: the step of an extension."""
        grid = sorted(set(self.factors))
        return min(b / a for a, b in zip(grid, grid[1:]))


def rung_steps(fractions: Sequence[float], max_steps: int) -> tuple[int, ...]:
    """Rungs as steps of a run of `max_steps` (at least 1; repeated steps merged)."""
    return tuple(sorted({min(max(round(f * max_steps), 1), max_steps) for f in fractions}))


@dataclass(frozen=True)
class SearchResult:
    trials: list[Trial]                           # in the order they started
    chosen: Trial

    @property
    def searched_range(self) -> tuple[float, float]:
        rates = [t.lr for t in self.trials]
        return min(rates), max(rates)

    @property
    def chosen_inside(self) -> bool:
        """The chosen rate has a tried rate below and above it: the search bracketed it."""
        low, high = self.searched_range
        return low < self.chosen.lr < high


Advance = Callable[[float, int], RungScore]


def rank_key(trial: Trial, configured_lr: float) -> tuple:
    """Sort key, best first: not diverged, higher EM, lower loss, lr nearer the configured one,
    smaller lr."""
    score = trial.last
    if trial.diverged:
        return (1, 0.0, 0.0, 0.0, trial.lr)
    return (0, -score.em_pct, score.loss, abs(math.log(trial.lr / configured_lr)), trial.lr)


def best(trials: Sequence[Trial], configured_lr: float) -> Trial:
    return min(trials, key=lambda t: rank_key(t, configured_lr))


def next_rate(trials: Sequence[Trial], configured_lr: float, spacing: float) -> tuple[float, str]:
    """The next rate to try at the first rung, and why: beyond the edge where the best trial is,
    or halfway (geometrically) between the best and its better neighbour."""
    ordered = sorted(trials, key=lambda t: t.lr)
    top = best(trials, configured_lr)
    if top.diverged:                              # everything diverged: go lower
        return ordered[0].lr / spacing, "extension"
    if top is ordered[0]:
        return top.lr / spacing, "extension"
    if top is ordered[-1]:
        return top.lr * spacing, "extension"
    position = ordered.index(top)
    lower, upper = ordered[position - 1], ordered[position + 1]
    neighbour = best([lower, upper], configured_lr)
    return math.sqrt(top.lr * neighbour.lr), "refinement"


def search(configured_lr: float, plan: SearchPlan, advance: Advance) -> SearchResult:
    """Runs the search; `advance(lr, steps)` trains the trial of rate `lr` (a new one, or the
    one that stopped at the previous rung) up to `steps` and scores it there."""
    first = plan.rung_steps[0]
    trials: list[Trial] = []

    def start(lr: float, origin: str) -> None:
        trial = Trial(lr=lr, origin=origin)
        trial.rungs.append(advance(lr, first))
        trials.append(trial)

    for factor in sorted(set(plan.factors)):
        start(configured_lr * factor, "grid")
    while len(trials) < plan.trials:
        start(*next_rate(trials, configured_lr, plan.spacing))

    running = [t for t in trials if not t.diverged]
    for steps in plan.rung_steps[1:]:
        if not running:
            break
        keep = max(1, math.ceil(len(running) * plan.keep_fraction))
        running = sorted(running, key=lambda t: rank_key(t, configured_lr))[:keep]
        for trial in running:
            trial.rungs.append(advance(trial.lr, steps))
        running = [t for t in running if not t.diverged]
    finalists = running or trials
    return SearchResult(trials=trials, chosen=best(finalists, configured_lr))
