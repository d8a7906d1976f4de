"""The report's view of the `tune` stage: per method the chosen learning rate and whether the
search bracketed it, and every trial at every rung (results/{method}/lr_selection.json)."""
from __future__ import annotations

from typing import Sequence

from cfqa.contract import LrRung, LrSelection
from cfqa.report import formatting as fmt
from cfqa.report.inputs import MethodResults
from cfqa.report.tables import Table, method_cells, method_headers


def _selected(results: Sequence[MethodResults]) -> list[tuple[MethodResults, LrSelection]]:
    return [(r, r.lr_selection) for r in results if r.lr_selection is not None]


def _rung_cell(rung: LrRung | None) -> str:
    if rung is None:
        return ""
    if rung.val_contextual_em_pct is None:
        return f"diverged by step {rung.steps}"
    return f"{fmt.percent(rung.val_contextual_em_pct)} · {fmt.decimal(rung.val_loss, 3)}"


def choice_table(results: Sequence[MethodResults]) -> Table | None:
    """One row per method: the chosen rate, where it lies in the searched range, the budget."""
    rows = []
    for r, selection in _selected(results):
        low, high = selection.searched_lr_range
        configured = selection.run.params.get("method", {}).get("train", {}).get("lr")
        rows.append((*method_cells(r), fmt.scalar(selection.chosen_lr), fmt.scalar(low), fmt.scalar(high),
                     f"{high / low:.0f}×", "inside" if selection.chosen_inside else "AT THE EDGE",
                     fmt.count(len(selection.trials)), ", ".join(str(s) for s in selection.rung_steps),
                     fmt.count(selection.max_steps), fmt.scalar(configured)))
    if not rows:
        return None
    criteria = sorted({s.criterion for _, s in _selected(results)})
    edge = [r.name for r, s in _selected(results) if not s.chosen_inside]
    return Table(
        key="lr-choice",
        title="Learning-rate search",
        headers=(*method_headers(results), "chosen lr", "lowest tried", "highest tried", "range", "chosen lies",
                 "trials", "rungs (steps)", "schedule (steps)", "grid centre (train.lr)"),
        rows=tuple(rows),
        caption=(f"The `tune` stage per method, one seed, validation data only; criterion: {'; '.join(criteria)}. "
                 "Every method gets the same number of trials on the same rungs of its real schedule. "
                 + (f"The chosen rate is at the edge of the searched range for {', '.join(edge)}: the "
                    "search ran out of trials before it bracketed the optimum." if edge else
                    "Every chosen rate has a tried rate below and above it.")),
    )


def trials_table(results: Sequence[MethodResults]) -> Table | None:
    """Every trial of every method: its rate, why it was tried, and its score at each rung."""
    selected = _selected(results)
    if not selected:
        return None
    depth = max(len(s.rung_steps) for _, s in selected)
    rows = []
    for r, selection in selected:
        for trial in selection.trials:
            rungs = [trial.rungs[i] if i < len(trial.rungs) else None for i in range(depth)]
            rows.append((*method_cells(r), fmt.scalar(float(trial.lr)), fmt.text(trial.origin),
                         *(_rung_cell(rung) for rung in rungs), fmt.text(trial.status),
                         "chosen" if trial.lr == selection.chosen_lr else ""))
    return Table(
        key="lr-selection",
        title="Learning-rate trials",
        headers=(*method_headers(results), "lr", "tried as", *(f"rung {i + 1}" for i in range(depth)), "status",
                 "chosen"),
        rows=tuple(rows),
        caption="Each trial's validation contextual EM (%) · validation loss at each rung it reached (rung "
                "steps in the table above). grid: the initial grid; extension: beyond the edge where the best "
                "trial was; refinement: between the best and its better neighbour. After each rung but the "
                "last the better trials continue (the others are pruned); a diverged trial stops.",
    )


def selection_tables(results: Sequence[MethodResults]) -> tuple[Table, ...]:
    """The tables the report shows for the `tune` stage; none when no method was tuned."""
    return tuple(t for t in (choice_table(results), trials_table(results)) if t is not None)
