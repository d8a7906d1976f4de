"""The report's content as a small document model (sections of paragraphs, bullet lists,
tables and figures), assembled from loaded results; render.py turns it into Markdown/HTML."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from cfqa.report import tables
from cfqa.report.inputs import MethodResults
from cfqa.report.plots import FIGURE_CAPTIONS
from cfqa.report.tables import Table

DEFAULT_LIMITATIONS = (
    "The embedded default fine-tunes a T5 of a few million parameters on CPU for minutes. A "
    "model that small does not copy into its answer a string it never emitted during "
    "fine-tuning, so it cannot show the span copying a large T5 does on new answers.",
    "The embedded world is built from many-to-one relations (city → country, country → "
    "continent, currency, language), so test answers are strings the model produced in "
    "training and the context decides which of them is right. Contextual accuracy here "
    "measures reading to choose among known answers, not extracting unseen spans.",
    "The numbers are not comparable with DisentQA's (T5-XXL fine-tuned on Natural Questions): "
    "model size, data and training budget differ. Compare methods within one report only.",
    "Each method is one training run with one seed; differences of a few points between "
    "methods can be run-to-run noise.",
)


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
        return DEFAULT_LIMITATIONS
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


def build_document(results: list[MethodResults], stats: dict[str, Any], sets: list[str],
                   overview: dict[str, str], notes: str | Sequence[str] | None = None) -> ReportDocument:
    methods = tuple(f"method `{r.name}`: registry method `{r.train.get('registry_method', r.name)}`, "
                    f"backbone `{r.train.get('backbone', 'base')}`" for r in results)
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
    limitations = Section(title="Limitations", bullets=limitation_notes(notes))
    return ReportDocument(
        title="Counterfactual QA: context vs memory, PEFT vs full fine-tuning",
        sections=(intro, accuracy, memorization, by_type, efficiency, data, limitations),
    )
