"""The report's content as a small document model (sections of paragraphs, bullet lists,
tables and figures), assembled from loaded results and their aggregates; render.py turns it
into Markdown/HTML. Every number in the text is computed from this run's results."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from cfqa.config import PrimaryEndpoint
from cfqa.report import formatting as fmt
from cfqa.report import format_learning, tables, tuning
from cfqa.report.aggregate import CONVERGED_WELL_FORMED_PCT, Aggregates
from cfqa.report.inputs import MethodResults
from cfqa.report.mixtures import MixtureGroup, mixture_groups
from cfqa.report.glossary import glossary_table
from cfqa.report.headline import HEADLINE, headline, headline_caption, headline_title
from cfqa.report.plots import FIGURE_CAPTIONS, FIGURE_TITLES
from cfqa.report.resolution import Resolution, endpoint_title, resolution_paragraphs, resolution_table, resolve
from cfqa.report.tables import Table

@dataclass(frozen=True)
class FigureRef:
    name: str          # the PNG's file stem in the reports directory
    caption: str
    title: str         # the heading above the figure


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


MIXTURE_REASON = (
    "Why the default mixture is f+cf+a: without answerability a model is never taught to answer "
    "\"unanswerable\", so its contextual EM on empty and random contexts is zero by construction and "
    "half of the evaluation would measure nothing; DisentQA trains on the same mixture.")


def mixture_cost(groups: Sequence[MixtureGroup]) -> str:
    """What answerability cost on answerable contexts, from this run's mixture runs (never typed
    by hand); where the run has none, where it is measured."""
    effects = [e for g in groups for e in g.effects]
    if not effects:
        return ("What answerability costs on answerable contexts is measured by the mixture profile "
                "(workflow/profiles/mixtures/, f, f+cf, f+a and f+cf+a of full fine-tuning); this run has no "
                "pair of runs that differ only in it.")
    parts = []
    for e in effects:
        d = e.difference
        verdict = ("higher" if d.difference > 0 else "lower") if e.significant else "not resolved"
        parts.append(f"`{e.with_a}` − `{e.without_a}` on {e.variant} contexts "
                     f"{fmt.signed_interval(d.difference, d.low, d.high)} pp ({verdict}, {d.n_seeds} seeds)")
    return ("In this run, adding answerability changed contextual EM on answerable `test` contexts by: "
            + "; ".join(parts) + " (Holm over the pairs and variants of the answerability table).")


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
    return FigureRef(name=name, caption=FIGURE_CAPTIONS[name], title=FIGURE_TITLES[name])


def headline_section(results: list[MethodResults], agg: Aggregates, endpoint: PrimaryEndpoint) -> Section:
    """The answer first: each method against full fine-tuning, before any table."""
    answer = headline(results, agg, endpoint)
    return Section(title="At a glance",
                   figures=(FigureRef(name=HEADLINE, title=headline_title(answer), caption=headline_caption(answer)),))


SET_DESCRIPTIONS = {
    "test": "`test`: questions never seen in training.",
    "seen": "`seen`: training questions asked again with fresh contexts (Longpre et al.'s "
            "train-overlap analysis): what the model memorized in fine-tuning meets the context.",
}

SINGLE_RUNS_DIFFER = (
    "A single training run is not a measurement of a method: the same commit, params and seed give "
    "bit-identical results on one machine and different ones on another CPU (BLAS kernels differ and "
    "training amplifies the difference), and a run's per-type behaviour can flip with the seed. The "
    "intervals over seeds and questions are what to compare; a difference is called a difference "
    "only where it is significant after Holm's adjustment.")


def _interval_text(interval) -> str:
    if interval is None or interval.estimate != interval.estimate:
        return fmt.MISSING
    return f"{fmt.interval(interval.estimate, interval.low, interval.high)} %"


def _seeds_text(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _versus_reference(resolution: Resolution | None, method: str) -> str:
    """The method's primary-endpoint comparison with its verdict."""
    comparison = next((c for c in resolution.comparisons if c.method == method), None) if resolution else None
    if comparison is None or comparison.decision is None:
        return ""
    d = comparison.decision.difference
    difference = (f"{fmt.signed_interval(d.difference, d.low, d.high)} pp, Holm p "
                  f"{fmt.p_value(comparison.decision.holm_p)}")
    where = f"on the primary endpoint ({endpoint_title(resolution.endpoint)})"
    if comparison.decision.significant:
        verdict = "higher than" if d.difference > 0 else "lower than"
        return f"; {verdict} `{comparison.reference}` {where} ({difference})"
    return f"; {comparison.verdict} against `{comparison.reference}` {where} ({difference}, n.s.)"


def findings_section(results: list[MethodResults], agg: Aggregates, resolution: Resolution | None = None) -> Section:
    """Sentences with numbers, all computed from this run's results (never typed by hand)."""
    bullets = []
    for r in results:
        factual = agg.accuracy.get((r.key, "test", "factual", "contextual_em"))
        if factual is None:
            continue
        baseline = tables.run_mean(r, lambda run: run.metrics.most_frequent_em_pct.get("test", {}).get("all"))
        memorized = [f"{_interval_text(cell.interval)} on `{s}`" for s in agg.sets
                     if (cell := agg.memorization.get((r.key, s))) is not None]
        state = agg.convergence[r.key]
        converged = "" if state.converged else (
            f" Not converged: {fmt.percent(state.mean_pct)} % well-formed answers on factual `test` "
            f"(below {CONVERGED_WELL_FORMED_PCT:.0f} %), so it is not ranked.")
        bullets.append(
            f"`{r.key}` ({_seeds_text(factual.n_seeds)}): contextual EM on factual `test` contexts "
            f"{_interval_text(factual)} (always the most frequent training answer: "
            f"{fmt.percent(baseline)} %){_versus_reference(resolution, r.key)}; memorization ratio "
            + (", ".join(memorized) or fmt.MISSING) + "." + converged)
    return Section(
        title="This run in numbers",
        paragraphs=("Each number is a mean over seeds with its 95 % t interval over seeds [low, high] and the "
                    "number of seeds behind it. A method is called higher or lower than full fine-tuning only on "
                    "the primary endpoint and only where Holm's adjustment over its family calls the paired "
                    "difference; otherwise the two are not ranked.",),
        bullets=tuple(bullets),
    )


def run_facts(results: list[MethodResults]) -> tuple[str, ...]:
    """How many runs stand behind the report and every distinct machine that produced them."""
    runs = [run for r in results for run in r.runs]
    if not runs:
        return ()
    seeds = sorted({run.seed for run in runs})
    machines: dict[tuple[str, str, str, str], list[str]] = {}
    for r, run in ((r, run) for r in results for run in r.runs):
        for stage, hardware in (("train", run.train.run.hardware), ("evaluate", run.metrics.run.hardware)):
            key = (hardware.cpu_model, hardware.cpu_capability, hardware.blas, hardware.gpu or "no GPU")
            label = f"{r.key}/seed{run.seed}"
            if label not in machines.setdefault(key, []):
                machines[key].append(label)
    where = [f"{cpu} (capability {capability}, BLAS {blas}, {gpu}): "
             + (", ".join(labels) if len(machines) > 1 else "every run")
             for (cpu, capability, blas, gpu), labels in sorted(machines.items())]
    return (f"{len(results)} methods × {len(seeds)} seeds ({', '.join(map(str, seeds))}) = {len(runs)} "
            f"training runs, on {len(machines)} distinct machine{'s' if len(machines) != 1 else ''}: "
            + "; ".join(where) + ".", SINGLE_RUNS_DIFFER)


def pretrain_jobs(results: list[MethodResults]) -> tuple[str, ...]:
    """The pretrain job as Snakemake's benchmark measured it, once per family (every method of
    a run shares its backbone); nothing where Snakemake wrote no record."""
    sentences, seen = [], set()
    for r in results:
        if not r.pretrain_benchmark or r.family in seen:
            continue
        seen.add(r.family)
        seconds = tables.seed_mean([row.wall_time_s for row in r.pretrain_benchmark])
        rss = tables.seed_mean([row.max_rss_bytes for row in r.pretrain_benchmark])
        family = "" if r.family is None else f" of family `{r.family}`"
        sentences.append(f"Pretraining job{family} (Snakemake's benchmark): {fmt.seconds(seconds)}, "
                         f"max RSS {fmt.bytes_size(rss)}.")
    return tuple(sentences)


def _statistics_note(agg: Aggregates) -> str:
    one_seed = (" With one seed there is no seed-level interval: estimates stand alone and nothing is compared."
                if len(agg.seeds) == 1 else "")
    return ("The seed is the unit of replication. Intervals: t intervals on S − 1 degrees of freedom whose "
            "standard error is the spread of the per-seed values plus the sampling of questions (crossed "
            "seeds × questions); with few seeds and a small seed spread they are conservative (simulated "
            "coverage of 95 % intervals above 95 %). Comparisons with full fine-tuning: paired t-tests on the "
            "same seeds and questions, Holm over each table's declared family, each interval at the level of "
            "its Holm step; memorization ratios linearised per cell (delta method). No random numbers: the "
            "report is the same on a rerun." + one_seed)


def resolution_section(results: list[MethodResults], agg: Aggregates, resolution: Resolution) -> Section:
    """What this run can resolve on its primary endpoint; the rest of the report is descriptive."""
    return Section(title="What this run can resolve",
                   paragraphs=resolution_paragraphs(resolution, len(agg.seeds)),
                   tables=(resolution_table(results, resolution),) if resolution.comparisons else ())


def build_document(results: list[MethodResults], agg: Aggregates, stats: dict[str, Any],
                   overview: dict[str, str], notes: str | Sequence[str] | None = None,
                   endpoint: PrimaryEndpoint = PrimaryEndpoint()) -> ReportDocument:
    sets = list(agg.sets)
    resolution = resolve(agg, endpoint)
    families = sorted({r.family for r in results if r.family is not None})
    intro = Section(
        title="Overview",
        paragraphs=(
            "Does a fine-tuned language model (T5 or GPT-Neo, see the backbone below) answer from the context "
            "or from memory, and how do "
            "parameter-efficient methods compare with full fine-tuning? Each question is asked "
            "with its factual context, a counterfactual context (the answer replaced by another "
            "answer of the same type), no context (empty) and another question's context "
            "(random). The model answers twice: the contextual answer (what the context says, "
            "\"unanswerable\" without one) and the parametric answer (what it memorized).",
            SINGLE_RUNS_DIFFER,
        ) + ((f"Model families side by side: {', '.join(f'`{f}`' for f in families)}. Every per-method table "
              "has a family column and lists each family's methods together; each family is aggregated on "
              "its own questions and compared with its own full fine-tuning, so numbers of two families are "
              "set side by side, not tested against each other. The base model below is this run's; the "
              "others' runs record theirs.",) if families else ()),
        bullets=tuple(f"{key}: {value}" for key, value in overview.items())
        + tuple(SET_DESCRIPTIONS.get(s, f"`{s}`") for s in sets),
        tables=(glossary_table(results),),
    )
    accuracy = Section(
        title="Context or memory",
        tables=tuple(tables.accuracy_table(results, agg, s) for s in sets),
        figures=(_figure("contextual_em"),),
    )
    if agg.reference is not None:
        reference = tables.reference_label(results, agg)
        without = [f"`{f}`" for f in families if not any(r.family == f and r.key in agg.references.values()
                                                         for r in results)]
        comparison = Section(
            title="Compared with full fine-tuning",
            paragraphs=(f"Descriptive: each method minus {reference} on the same questions and seeds, every "
                        "variant and answer. Methods marked n.s. are not distinguishable from it here and are "
                        "not ranked; the one claim of this report is the primary endpoint's (What this run can "
                        "resolve).",)
            + ((f"No full fine-tuning run in family {', '.join(without)}: its methods are not compared.",)
               if without else ()),
            tables=tuple(tables.comparison_table(results, agg, s) for s in sets),
        )
    else:
        comparison = Section(title="Compared with full fine-tuning",
                             paragraphs=("No method uses the registry method `full`: no paired comparison.",))
    memorization = Section(
        title="Memorization ratio",
        tables=(tables.memorization_table(results, agg),),
        figures=(_figure("memorization_ratio"),),
    )
    by_type = Section(
        title="By answer type",
        tables=tuple(tables.by_type_table(results, agg, s) for s in sets)
        + (tuple(tables.type_comparison_table(results, agg, s) for s in sets) if agg.reference else ()),
    )
    groups = mixture_groups(results, agg)
    mixture = Section(
        title="Training mixture",
        paragraphs=(("Runs of one method that differ only in the training mixture, laid out as "
                     "DisentQA's results table, then the effect of adding answerability.",) if groups else
                    ("Every run uses one training mixture per method. The mixture ablation (f, f+cf, f+a, "
                     "f+cf+a for full fine-tuning) runs with the profile workflow/profiles/mixtures/ under "
                     "runs/mixtures/; its report (runs/mixtures/reports/index.html) shows the table.",))
        + (MIXTURE_REASON, mixture_cost(groups)),
        tables=tuple(t for g in groups for t in (tables.mixture_table(g, agg),)
                     + ((tables.answerability_effect_table(g),) if g.effects else ())),
    )
    stalled = [r.key for r in results if not agg.convergence[r.key].converged]
    convergence = Section(
        title="Convergence",
        paragraphs=((f"Not converged (fewer than {CONVERGED_WELL_FORMED_PCT:.0f} % well-formed answers on "
                     f"factual `test` contexts, seed mean): {', '.join(f'`{m}`' for m in stalled)}. They are "
                     "left out of the comparisons with full fine-tuning; their validation curves are below "
                     "and in the training-curves figure (Efficiency).",) if stalled else
                    (f"Every method produced at least {CONVERGED_WELL_FORMED_PCT:.0f} % well-formed answers "
                     "on factual `test` contexts (seed mean); the training-curves figure (Efficiency) shows "
                     "each run's losses.",)),
        tables=(tables.convergence_table(results, agg),) if stalled else (),
    )
    convergence = format_learning.with_first_token(convergence, results, agg)
    lr_tables = tuning.selection_tables(results)
    efficiency = Section(
        title="Efficiency",
        paragraphs=pretrain_jobs(results),
        tables=(tables.efficiency_table(results), tables.memory_table(results), tables.training_table(results))
        + lr_tables,
        figures=(_figure("accuracy_vs_cost"), _figure("training_curves")),
    )
    data = Section(
        title="Data",
        paragraphs=() if stats else ("data/stats.json holds no statistics.",),
        tables=tuple(tables.data_tables(stats)),
    )
    limitations = Section(title="Limitations",
                          bullets=run_facts(results) + (_statistics_note(agg),) + limitation_notes(notes))
    return ReportDocument(
        title="Counterfactual QA: context vs memory, PEFT vs full fine-tuning",
        sections=(headline_section(results, agg, endpoint), intro, findings_section(results, agg, resolution), resolution_section(results, agg, resolution),
                  accuracy, comparison, memorization, by_type, mixture, convergence, efficiency, data, limitations),
    )
