"""The report's content as a small document model (sections of paragraphs, bullet lists,
tables and figures), assembled from loaded results; render.py turns it into Markdown/HTML."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from cfqa.report import tables
from cfqa.report.inputs import MethodResults
from cfqa.report.plots import FIGURE_CAPTIONS
from cfqa.report.tables import Table

@dataclass(frozen=True)
class FigureRef:
    name: str          # the PNG's file stem in the reports directory
    caption: str


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: tuple[str, ...] = ()
    bullets: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    figures: tuple[FigureRef, ...] = ()


@dataclass(frozen=True)
class ReportDocument:
    title: str
    sections: tuple[Section, ...]


def limitation_notes(notes: str | Sequence[str] | None) -> tuple[str, ...]:
    """Notes as bullet items: a string is split into paragraphs at blank lines."""
    if notes is None:
        return ()
    if isinstance(notes, str):
        items = [" ".join(part.split()) for part in notes.split("\n\n")]
    else:
        items = [" ".join(str(part).split()) for part in notes]
    return tuple(item for item in items if item)


def _figure(name: str) -> FigureRef:
    return FigureRef(name=name, caption=FIGURE_CAPTIONS[name])


SET_DESCRIPTIONS = {
    "test": "`test`: questions never seen in training.",
    "seen": "`seen`: training questions asked again with fresh contexts (Longpre et al.'s "
            "train-overlap analysis): what the model memorized in fine-tuning meets the context.",
}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} %"


def findings_section(results: list[MethodResults]) -> Section:
    """Sentences with numbers, all computed from this run's results (never typed by hand)."""
    bullets = []
    for r in results:
        factual = r.metrics.sets.get("test", {}).get("factual")
        baseline = r.metrics.most_frequent_em_pct.get("test", {}).get("all")
        memorized = {s: m.memorization_ratio_pct for s, m in r.metrics.memorization.items()}
        if factual is None:
            continue
        bullets.append(
            f"`{r.name}`: contextual EM on factual `test` contexts {_pct(factual.contextual_em_pct)} "
            f"(always the most frequent training answer: {_pct(baseline)}); memorization ratio "
            + ", ".join(f"{_pct(value)} on `{s}`" for s, value in memorized.items()) + ".")
    return Section(
        title="This run in numbers",
        paragraphs=("Each line is one training run. Without several seeds and intervals, a "
                    "difference between two methods here is not evidence that one is better.",),
        bullets=tuple(bullets),
    )


def run_facts(results: list[MethodResults]) -> tuple[str, ...]:
    """What the results files say about how many runs and which machine stand behind them."""
    if not results:
        return ()
    seeds = sorted({r.train.seed for r in results})
    machines = sorted({(r.train.run.hardware.cpu_model, r.train.run.hardware.cpu_capability,
                        r.train.run.hardware.blas, r.train.run.hardware.gpu or "no GPU") for r in results})
    where = "; ".join(f"{cpu} ({capability}, BLAS {blas}, {gpu})" for cpu, capability, blas, gpu in machines)
    return (f"{len(results)} methods, one training run each (seed {', '.join(map(str, seeds))}), on {where}. "
            "The same seed gives bit-identical results on one machine but different ones on another "
            "CPU: compare runs across machines only through intervals over several seeds.",)


def build_document(results: list[MethodResults], stats: dict[str, Any], sets: list[str],
                   overview: dict[str, str], notes: str | Sequence[str] | None = None) -> ReportDocument:
    methods = tuple(f"method `{r.name}`: registry method `{r.train.registry_method}`, "
                    f"backbone `{r.train.backbone}`" for r in results)
    intro = Section(
        title="Overview",
        paragraphs=(
            "Does a fine-tuned T5 answer from the context or from memory, and how do "
            "parameter-efficient methods compare with full fine-tuning? Each question is asked "
            "with its factual context, a counterfactual context (the answer replaced by another "
            "answer of the same type), no context (empty) and another question's context "
            "(random). The model answers twice: the contextual answer (what the context says, "
            "\"unanswerable\" without one) and the parametric answer (what it memorized).",
        ),
        bullets=tuple(f"{key}: {value}" for key, value in overview.items())
        + tuple(SET_DESCRIPTIONS.get(s, f"`{s}`") for s in sets) + methods,
    )
    accuracy = Section(
        title="Context or memory",
        tables=tuple(tables.accuracy_table(results, s) for s in sets),
        figures=(_figure("contextual_em"),),
    )
    memorization = Section(
        title="Memorization ratio",
        tables=(tables.memorization_table(results, sets),),
        figures=(_figure("memorization_ratio"),),
    )
    by_type = Section(
        title="By answer type",
        tables=tuple(tables.by_type_table(results, s) for s in sets),
    )
    efficiency = Section(
        title="Efficiency",
        tables=(tables.efficiency_table(results), tables.memory_table(results), tables.training_table(results)),
        figures=(_figure("accuracy_vs_cost"), _figure("training_curves")),
    )
    data = Section(
        title="Data",
        paragraphs=() if stats else ("data/stats.json holds no statistics.",),
        tables=tuple(tables.data_tables(stats)),
    )
    limitations = Section(title="Limitations", bullets=run_facts(results) + limitation_notes(notes))
    return ReportDocument(
        title="Counterfactual QA: context vs memory, PEFT vs full fine-tuning",
        sections=(intro, findings_section(results), accuracy, memorization, by_type, efficiency, data,
                  limitations),
    )
