"""Per-question outcomes as seeds × questions arrays, the input of cfqa.analysis.statistics.

Every method and seed answered the same questions, so question j of one run is question j of
every other: the columns are aligned by question id (the order of the first run read), and a
run whose ids differ is an error naming its per_question.jsonl. The values are the ones the
evaluate stage scored per question (cfqa.scoring.metrics, the registry's `compared` metrics), so a
seed's row mean equals the score metrics.json holds for that run; nothing is scored here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cfqa.scoring import metrics
from cfqa.contract import QuestionScores, ResultsError
from cfqa.report.inputs import MethodResults, RunResults

GroupKey = tuple[str, str]          # (set, variant)
UNTYPED = "untyped"                 # the answer type of a row without one (as the evaluate stage counts it)


@dataclass(frozen=True)
class Outcomes:
    """One method on one group of questions: seeds × questions arrays of each compared metric's
    per-question values (0/1 for a match); a metric's array is None when no run has an answer
    for it (no parametric answer generated)."""

    values: dict[str, np.ndarray | None]

    def of(self, metric: str) -> np.ndarray | None:
        return self.values[metric]

    @property
    def contextual(self) -> np.ndarray:
        """Contextual EM: what the memorization and answerability comparisons condition on."""
        return self.values["contextual_em"]

    def columns(self, index: np.ndarray) -> Outcomes:
        return Outcomes(values={name: None if array is None else array[:, index] for name, array in self.values.items()})


@dataclass(frozen=True)
class Classes:
    """Memorization classes on counterfactual contexts with a substitute: seeds × questions.
    `factual_correct` marks, per seed, the questions whose factual version that run answered
    correctly (contextual EM; None when the set has no factual rows)."""

    is_original: np.ndarray
    is_substitute: np.ndarray
    factual_correct: np.ndarray | None = None

    @property
    def is_other(self) -> np.ndarray:
        return 1.0 - self.is_original - self.is_substitute

    def known(self) -> Classes | None:
        """Only the cells whose factual version the same run answered correctly (the others
        count in neither class): the questions where the model knew the original answer."""
        if self.factual_correct is None:
            return None
        return Classes(is_original=self.is_original * self.factual_correct,
                       is_substitute=self.is_substitute * self.factual_correct,
                       factual_correct=self.factual_correct)


@dataclass(frozen=True)
class QuestionArrays:
    ids: dict[GroupKey, tuple[str, ...]]          # question ids, the column order of every array
    answer_types: dict[GroupKey, tuple[str, ...]]  # per column
    outcomes: dict[tuple[str, str, str], Outcomes]  # (method, set, variant)
    memorization_ids: dict[str, tuple[str, ...]]   # set -> counterfactual ids with a substitute
    memorization: dict[tuple[str, str], Classes]   # (method, set)

    def types_in(self, set_name: str, variant: str) -> list[str]:
        return sorted(set(self.answer_types.get((set_name, variant), ())))

    def of_type(self, method: str, set_name: str, variant: str, answer_type: str) -> Outcomes:
        """The columns of one answer type."""
        types = np.asarray(self.answer_types[(set_name, variant)])
        return self.outcomes[(method, set_name, variant)].columns(np.flatnonzero(types == answer_type))


def _grouped(run: RunResults) -> dict[GroupKey, dict[str, QuestionScores]]:
    groups: dict[GroupKey, dict[str, QuestionScores]] = {}
    for row in run.questions:
        group = groups.setdefault((row.set, row.variant), {})
        if row.id in group:
            raise ResultsError(f"{run.questions_path}: question {row.id!r} appears twice in set "
                               f"`{row.set}`, variant {row.variant}; expected one prediction per question")
        group[row.id] = row
    return groups


def _examples(ids: set[str]) -> str:
    shown = sorted(ids)[:3]
    return ", ".join(repr(i) for i in shown) + (", ..." if len(ids) > 3 else "")


def _check_same_ids(run: RunResults, key: GroupKey, ids: Sequence[str], rows: dict[str, QuestionScores],
                    reference: RunResults) -> None:
    missing, extra = set(ids) - set(rows), set(rows) - set(ids)
    if missing or extra:
        parts = ([f"{len(missing)} missing ({_examples(missing)})"] if missing else []) + \
                ([f"{len(extra)} extra ({_examples(extra)})"] if extra else [])
        raise ResultsError(
            f"{run.questions_path}: set `{key[0]}`, variant {key[1]}: question ids differ from "
            f"{reference.questions_path}: {', '.join(parts)}; every method and seed must answer the "
            "same questions (rerun `cfqa evaluate` on the same data)")


def _metric_values(rows_per_seed: list[list[QuestionScores]], name: str) -> np.ndarray | None:
    """As the evaluate stage aggregates them (cfqa.scoring.metrics.Metric.group_value): a question
    without an answer counts as wrong, and a metric no run has an answer for has no array."""
    values = [[row.scores[name] for row in rows] for rows in rows_per_seed]
    if all(value is None for seed_values in values for value in seed_values):
        return None
    return np.array([[0.0 if value is None else value for value in seed_values] for seed_values in values],
                    dtype=float)


def _outcomes(rows_per_seed: list[list[QuestionScores]]) -> Outcomes:
    return Outcomes(values={metric.name: _metric_values(rows_per_seed, metric.name)
                            for metric in metrics.compared_metrics()})


def _classes(run: RunResults, rows: list[QuestionScores]) -> np.ndarray:
    labels = []
    for row in rows:
        if row.memorization is None:
            raise ResultsError(f"{run.questions_path}: question {row.id!r} (set `{row.set}`) has no "
                               "memorization class here (no substitute) but has one in other runs; expected the "
                               "same data")
        labels.append(row.memorization)
    return np.array(labels)


def _factual_correct(ids: dict[GroupKey, tuple[str, ...]], outcomes: dict[tuple[str, str, str], Outcomes],
                     method: str, set_name: str, key_ids: Sequence[str]) -> np.ndarray | None:
    """Seeds × `key_ids`: 1 where that seed answered the question's factual version correctly;
    None without factual rows (a question without one counts as not known)."""
    factual_ids = ids.get((set_name, "factual"))
    if factual_ids is None:
        return None
    column = {question: index for index, question in enumerate(factual_ids)}
    correct = outcomes[(method, set_name, "factual")].contextual
    known = np.zeros((correct.shape[0], len(key_ids)))
    for position, question in enumerate(key_ids):
        if question in column:
            known[:, position] = correct[:, column[question]]
    return known


def question_arrays(results: Sequence[MethodResults]) -> QuestionArrays:
    """Aligned outcome arrays for every method, set and variant (rows in the seed order)."""
    runs = [run for method in results for run in method.runs]
    if not runs:
        raise ValueError("expected at least one run")
    grouped = {(run.method, run.seed): _grouped(run) for run in runs}
    reference = runs[0]
    reference_groups = grouped[(reference.method, reference.seed)]
    ids = {key: tuple(rows) for key, rows in reference_groups.items()}
    for run in runs[1:]:
        groups = grouped[(run.method, run.seed)]
        for key in sorted(set(ids) | set(groups)):
            _check_same_ids(run, key, ids.get(key, ()), groups.get(key, {}), reference)
    answer_types = {key: tuple(row.answer_type or UNTYPED for row in rows.values())
                    for key, rows in reference_groups.items()}

    outcomes: dict[tuple[str, str, str], Outcomes] = {}
    for method in results:
        for key, key_ids in ids.items():
            outcomes[(method.key, *key)] = _outcomes(
                [[grouped[(method.name, run.seed)][key][i] for i in key_ids] for run in method.runs])

    memorization_ids = {set_name: tuple(i for i, row in rows.items() if row.memorization is not None)
                        for (set_name, variant), rows in reference_groups.items() if variant == "counterfactual"}
    memorization: dict[tuple[str, str], Classes] = {}
    for method in results:
        for set_name, key_ids in memorization_ids.items():
            labels = np.array([_classes(run, [grouped[(method.name, run.seed)][(set_name, "counterfactual")][i]
                                              for i in key_ids]) for run in method.runs])
            labels = labels.reshape(len(method.runs), len(key_ids))
            memorization[(method.key, set_name)] = Classes(
                is_original=(labels == "original").astype(float), is_substitute=(labels == "substitute").astype(float),
                factual_correct=_factual_correct(ids, outcomes, method.key, set_name, key_ids))
    return QuestionArrays(ids=ids, answer_types=answer_types, outcomes=outcomes,
                          memorization_ids=memorization_ids, memorization=memorization)
