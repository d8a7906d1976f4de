"""The report's content as a small document model (sections of paragraphs, bullet lists,
tables and figures), assembled from loaded results and their aggregates; render.py turns it
into Markdown/HTML. Every number in the text is computed from this run's results."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from cfqa.report import formatting as fmt
from cfqa.report import format_learning, tables, tuning
from cfqa.report.aggregate import CONVERGED_WELL_FORMED_PCT, Aggregates
from cfqa.report.inputs import MethodResults
from cfqa.report.mixtures import mixture_groups
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


DEFAULT_MIXTURE_REASON = (
    "Why the default mixture is f+cf+a: without answerability a model is never taught to answer "
    "\"unanswerable\", so its contextual EM on empty and random contexts is zero by construction and "
    "half of the evaluation would measure nothing; DisentQA trains on the same mixture. On the "
    "embedded world answerability costs contextual EM on answerable contexts, the more so the "
    "shorter the training (the model falls back on \"unanswerable\" or on another entity of the "
    "context while it is still learning to tell a relevant context from an unrelated one); the "
    "mixture profile measures that cost with intervals.")


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


def _versus_reference(agg: Aggregates, method: str) -> str:
    comparison = agg.comparison(method, "test", "factual", "contextual_em")
    if comparison is None or comparison.difference is None:
        return ""
    d = comparison.difference
    reference = agg.reference_of(method)
    difference = f"{fmt.signed_interval(d.difference, d.low, d.high)} pp, Holm p {fmt.p_value(comparison.holm_p)}"
    if comparison.significant:
        verdict = "higher than" if d.difference > 0 else "lower than"
        return f"; {verdict} `{reference}` ({difference})"
    return f"; not significantly different from `{reference}` ({difference}, n.s.)"


def findings_section(results: list[MethodResults], agg: Aggregates) -> Section:
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
            f"{fmt.percent(baseline)} %){_versus_reference(agg, r.key)}; memorization ratio "
            + (", ".join(memorized) or fmt.MISSING) + "." + converged)
    return Section(
        title="This run in numbers",
        paragraphs=("Each number is a mean over seeds with its 95 % interval [low, high] and the number "
                    "of seeds behind it. A method is called higher or lower than full fine-tuning only "
                    "where the paired difference is significant after Holm's adjustment; otherwise the "
                    "two are not ranked.",),
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
    one_seed = " With one seed the intervals cover question sampling only." if len(agg.seeds) == 1 else ""
    return ("Intervals: hierarchical percentile bootstrap over seeds and questions (the same question "
            "draws for every seed); p-values: sign-flip permutation tests over questions, Holm-adjusted "
            "within each family of comparisons with full fine-tuning (one set, variant and metric); "
            "fixed random seed, so the report is the same on a rerun." + one_seed)


def build_document(results: list[MethodResults], agg: Aggregates, stats: dict[str, Any],
                   overview: dict[str, str], notes: str | Sequence[str] | None = None) -> ReportDocument:
    sets = list(agg.sets)
    methods = tuple(f"method `{r.name}`{'' if r.family is None else f' of family `{r.family}`'}: registry method "
                    f"`{r.registry_method}`, backbone `{r.backbone}`, seeds {', '.join(map(str, r.seeds))}"
                    for r in results)
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
        + tuple(SET_DESCRIPTIONS.get(s, f"`{s}`") for s in sets) + methods,
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
            paragraphs=(f"Each method minus {reference} on the same questions and seeds. Methods "
                        "marked n.s. are not distinguishable from it here and are not ranked.",)
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
                     "runs/mixtures/; its report (runs/mixtures/reports/index.html) shows the table.",)) + (DEFAULT_MIXTURE_REASON,),
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
        sections=(intro, findings_section(results, agg), accuracy, comparison, memorization, by_type,
                  mixture, convergence, efficiency, data, limitations),
    )
