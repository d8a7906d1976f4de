"""The training-mixture ablation, as DisentQA reports it: runs of one registry method that
differ only in `train.mixture` (f = factual, cf = counterfactual, a = answerability: the empty
and random variants), their accuracies per test variant, and the effect of adding
answerability to a mixture as a paired difference on the same questions and seeds.

A params.yaml entry such as `full_fcf: {method: full, train: {mixture: [factual,
counterfactual]}}` is one mixture run; the profile workflow/profiles/mixtures/ adds them.
Pure: computed from loaded results and the report's aggregates."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from cfqa.analysis import statistics
from cfqa.report.aggregate import ALPHA, CONFIDENCE, Aggregates
from cfqa.report.inputs import MethodResults

ANSWERABILITY = ("empty", "random")       # DisentQA's "a": no context, another question's context
ABBREVIATIONS = {"factual": "f", "counterfactual": "cf", "empty": "e", "random": "r"}
EFFECT_SET = "test"
EFFECT_VARIANTS = ("factual", "counterfactual")   # answerable contexts: where a could cost accuracy


@dataclass(frozen=True)
class MixtureRun:
    method: str                    # the params.yaml key
    key: str                       # MethodResults.key: the method, with its family when several are reported
    mixture: tuple[str, ...]
    label: str                     # f+cf+a
    steps: int                     # configured max_steps


@dataclass(frozen=True)
class AnswerabilityEffect:
    """`with_a` minus `without_a` (the same mixture without empty and random) on one variant;
    both are MethodResults keys. Decided by Holm over the group's table (every pair and
    variant), the difference's interval at the matching level."""

    with_a: str
    without_a: str
    variant: str
    decision: statistics.Decision

    @property
    def difference(self) -> statistics.Difference:
        return self.decision.difference

    @property
    def holm_p(self) -> float:
        return self.decision.holm_p

    @property
    def significant(self) -> bool:
        return self.decision.significant


@dataclass(frozen=True)
class MixtureGroup:
    registry_method: str
    family: str | None             # set when the report holds several model families
    runs: tuple[MixtureRun, ...]
    effects: tuple[AnswerabilityEffect, ...]


def mixture_label(mixture: Sequence[str]) -> str:
    """f, f+cf, f+a, f+cf+a: DisentQA's names; e or r alone when only one of the pair is in."""
    parts = [ABBREVIATIONS.get(v, v) for v in mixture if v not in ANSWERABILITY or
             not set(ANSWERABILITY) <= set(mixture)]
    if set(ANSWERABILITY) <= set(mixture):
        parts.append("a")
    return "+".join(parts)


def _train_settings(result: MethodResults) -> dict[str, Any]:
    return dict(result.runs[0].train.run.params.get("train", {}))


# Not compared: the mixture itself; the learning rate, which a profile may tune per mixture
# (workflow/profiles/mixtures gives all mixtures one rate); and the steps, which that profile
# scales with the mixture's size so that every mixture sees its factual rows equally often.
FREE_SETTINGS = ("mixture", "lr", "max_steps")


def _others(result: MethodResults) -> tuple:
    """Everything that must match for two runs to differ only in their mixture."""
    params = result.runs[0].train.run.params
    train = {k: v for k, v in _train_settings(result).items() if k not in FREE_SETTINGS}
    return (result.registry_method, result.backbone, repr(sorted(train.items())),
            repr(sorted(params.get("options", {}).items())), result.seeds)


def mixture_groups(results: Sequence[MethodResults], agg: Aggregates) -> list[MixtureGroup]:
    """One group per (model family and) registry method with runs of at least two different
    mixtures: mixtures are compared within a family."""
    by_method: dict[tuple[str | None, str], list[MethodResults]] = {}
    for r in results:
        by_method.setdefault((r.family, r.registry_method), []).append(r)
    groups = []
    for (family, registry_method), members in by_method.items():
        runs = []
        for r in members:
            train = _train_settings(r)
            mixture = tuple(train.get("mixture", ()))
            runs.append(MixtureRun(method=r.name, key=r.key, mixture=mixture, label=mixture_label(mixture),
                                   steps=int(train.get("max_steps", r.runs[0].train.steps))))
        if len({run.mixture for run in runs}) < 2:
            continue
        groups.append(MixtureGroup(registry_method=registry_method, family=family, runs=tuple(runs),
                                   effects=_effects(members, runs, agg)))
    return groups


def _effects(members: list[MethodResults], runs: list[MixtureRun], agg: Aggregates) -> tuple[AnswerabilityEffect, ...]:
    """Paired differences with − without answerability, for every pair that differs in nothing
    else (f+a − f and f+cf+a − f+cf when those runs exist); Holm over all of them, every pair
    and variant: the family of the group's table."""
    by_key = {r.key: r for r in members}
    pairs = []
    for with_a in runs:
        if not set(ANSWERABILITY) <= set(with_a.mixture):
            continue
        base = tuple(v for v in with_a.mixture if v not in ANSWERABILITY)
        for without in runs:
            if without.mixture == base and _others(by_key[with_a.key]) == _others(by_key[without.key]):
                pairs.append((with_a.key, without.key))
    family = []
    for variant in EFFECT_VARIANTS:
        for with_a, without in pairs:
            a = agg.outcomes(with_a, EFFECT_SET, variant)
            b = agg.outcomes(without, EFFECT_SET, variant)
            if a is None or b is None or a.contextual is None or b.contextual is None or a.contextual.shape[1] == 0:
                continue
            family.append((with_a, without, variant,
                           statistics.paired_difference(a.contextual, b.contextual, confidence=CONFIDENCE)))
    decisions = statistics.decide([d for *_, d in family], alpha=ALPHA)
    return tuple(AnswerabilityEffect(with_a=w, without_a=o, variant=v, decision=decision)
                 for (w, o, v, _), decision in zip(family, decisions))
