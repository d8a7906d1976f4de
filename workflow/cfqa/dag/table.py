"""The pipeline's DAG, declared once: every stage's command (its help and options, which the
CLI parses: cfqa.cli builds its subcommands from this table), inputs, outputs, params keys,
dimensions and what its jobs need where they run (a GPU, the network, memory and runtime at
each scale); the code each stage runs is read from its imports (cfqa.dag.code). dvc.yaml is
generated from this table (`python -m cfqa.dag`) and the Snakemake rules read it
(workflow/rules/*.smk), so the two engines and the CLI cannot drift; the execution profiles
(workflow/profiles/) add only what a site names (partitions, images)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from string import Formatter
from typing import Any, Callable, Literal

from cfqa.config import RUN_ROOT_KEY, run_root  # noqa: F401 (cfqa.dag exports both)
# The run's paths (relative to its root) and how a root moves them: cfqa.layout names every
# file of a run once; this table declares its stages with those names.
from cfqa.layout import (BASE, BASE_LM, DATA_STATS, DEFAULT_RUN_ROOT, ENTITIES, EVALUATION_RUN, FETCHED, HEADLINE,
                         JOB_BENCHMARK, JOB_LOG, JOB_STDERR_LOG, LR_SELECTION, METRICS, MODELS, PARAMS_FILE,
                         PER_QUESTION, PREDICTIONS, PREPARED, RAW, REPORT_FIGURE, REPORT_HTML, REPORT_MARKDOWN,
                         REPORTS, RESULTS, RUN_HEADLINE, RUN_MODEL, RUN_RESULTS, SEED_PREFIX, SUMMARY, TOKENIZED,
                         TRAIN_CURVE, TRAIN_RECORD, VALIDATED, VARIANTS, rooted)


@dataclass(frozen=True)
class Dimension:
    """A dimension of the DAG: a `{name}` wildcard in Snakemake, a foreach/matrix in DVC.
    Its values are the keys (or items) of `params_key` in params.yaml. `prefix` starts its
    path segment (`seed{seed}`: a folder name that says what it holds). A stage split by it
    takes `--{name}` on its command line (`help`, parsed as `type`)."""
    name: str
    params_key: str
    prefix: str = ""
    help: str = ""
    type: Callable[[str], Any] = str

    def values(self, params: dict) -> list[str]:
        entries = params[self.params_key]
        if isinstance(entries, dict):
            # A null entry is a method a later params file removed: no value of the dimension.
            return [str(key) for key, value in entries.items() if value is not None]
        return [str(value) for value in entries]

    @property
    def segment(self) -> str:
        return f"{self.prefix}{{{self.name}}}"


METHOD = Dimension("method", "methods", help="a key of params.yaml `methods`")
SEED = Dimension("seed", "seeds", prefix=SEED_PREFIX, help="the run's seed (one of params.yaml `seeds`)", type=int)
# Every dimension a path template may name; a stage lists in `dims` the ones it is split by.
DIMENSIONS: tuple[Dimension, ...] = (METHOD, SEED)
# One run: a method trained (and evaluated) with one seed.
RUN_DIMS: tuple[Dimension, ...] = (METHOD, SEED)
# RUN_MODEL (models/{method}/seed{seed}), RUN_RESULTS (results/{method}/seed{seed}) and
# LR_SELECTION (results/{method}/lr_selection.json, one per method: stage tune) come from the
# layout, spelled with these dimensions' segments (a test checks that they agree).
# VALIDATED is written by the `validate` stage once params.yaml loads and validates; every
# other stage depends on it, so `dvc repro` stops on a bad params.yaml before removing any
# output. Its bytes must not depend on params.yaml's content: DVC hashes it as every stage's
# dependency, so a stamp that changed with each edit would rerun the whole DAG.
# FETCHED is written by `fetch`, the one stage that uses the network (data and hub models into
# the run's cache, cfqa.stages.fetch); the stages that read the cache wait for it.
# Where a run writes: every path in this table is relative to the run root, the typed config's
# `run_root` (cfqa.config.run_root; a profile names its own, e.g. runs/mixtures, so it never writes over the
# default run's files). The default "." (DEFAULT_RUN_ROOT) keeps the paths as they are written here.
# Inputs that order jobs but whose new timestamp does not rerun them (Snakemake's ancient()):
# the stamp is rewritten whenever params.yaml changes, and each stage already reruns on its
# own params slice. params.yaml too: Snakemake validates the config when it parses the
# Snakefile, and a validate job rerun by every edit would hide the jobs the edit reruns (a
# job downstream of one that must run first is not scheduled in the same invocation).
# DVC keeps params.yaml as validate's dependency: `dvc repro` validates after every edit.
ORDER_ONLY_INPUTS = frozenset({VALIDATED, PARAMS_FILE})


@dataclass(frozen=True)
class Output:
    """One output. `kind` is how DVC tracks it: a plain out, a metric (`dvc metrics`), or
    "untracked": a Snakemake output that dvc.yaml leaves out, for files whose bytes change on
    every run (commit, timings) and that git holds instead. `cache: False` is only for files
    git holds (see .gitignore): a git-ignored file outside DVC's cache is missing from every
    clone, commit and experiment. `caption` names an .rst file under workflow/report/ and puts the
    file in Snakemake's HTML report."""
    path: str
    kind: Literal["out", "metric", "untracked"] = "out"
    cache: bool = True
    directory: bool = False
    caption: str | None = None
    category: str | None = None


def out(path: str, **kwargs) -> Output:
    return Output(path, "out", **kwargs)


def folder(path: str) -> Output:
    return Output(path, "out", directory=True)


def git_held(path: str, **kwargs) -> Output:
    # A small file git holds (not ignored, outside DVC's cache): old commits and experiments
    # keep it, so `dvc plots diff` and `dvc metrics diff` can read it back.
    return Output(path, "out", cache=False, **kwargs)


def metric(path: str, **kwargs) -> Output:
    # THE file `dvc metrics show/diff` and `dvc exp show` list (one per run root: every key
    # is a column of `dvc exp show`); git holds it.
    return Output(path, "metric", cache=False, **kwargs)


def untracked(path: str) -> Output:
    return Output(path, "untracked", cache=False)


# The sizes of run a params file can describe (its `scale` key): the memory and runtime a job
# of each stage gets are the table's values at that scale. `embedded`: the embedded world with
# a model of up to ~125M parameters (params.yaml on CPU; workflow/profiles/gpt-neo-125m on a
# GPU, whose CUDA context alone holds ~2 GB of host memory); `t5_large`: Natural Questions
# with T5-large, one 80 GB GPU per tune, train and evaluate job
# (workflow/profiles/disentqa-t5-large).
SCALES: tuple[str, ...] = ("embedded", "t5_large")
SCALE_KEY = "scale"
# What a job on a GPU asks for: one NVIDIA GPU (the CUDA image's build). `gpu` is the
# resource Snakemake's local scheduler counts and the SLURM (--gpus) and Kubernetes
# (nvidia.com/gpu, with gpu_manufacturer) executors request.
GPU_RESOURCES: dict[str, Any] = {"gpu": 1, "gpu_manufacturer": "nvidia"}


@dataclass(frozen=True)
class Resources:
    """What one job of a stage gets at one scale: memory and wall time (a limit: a job over
    it is killed by the scheduler)."""
    mem_mb: int
    runtime_min: int


def always(_params: dict) -> bool:
    return True


def never(_params: dict) -> bool:
    return False


@dataclass(frozen=True)
class Needs:
    """Where a stage's jobs can run and what they take.

    `gpu`: the stage runs its model on `train.device` in the CUDA image, and each job gets one
    GPU. `network(params)`: the job reads the network for these params; on a cluster it then
    runs where Snakemake runs (the login node: a local rule, never a job on a compute node
    without internet). `light`: cheap enough to run where Snakemake runs. `data_parallel`: a
    job given more than one GPU runs as that many processes (accelerate launch), one per GPU.
    `at`: memory and runtime per scale (every one of SCALES)."""
    at: dict[str, Resources]
    gpu: bool = False
    network: Callable[[dict], bool] = never
    light: bool = False
    data_parallel: bool = False

    def resources(self, scale: str) -> Resources:
        try:
            return self.at[scale]
        except KeyError:
            raise KeyError(f"no resources at scale {scale!r}; scales: {list(SCALES)}") from None

    def local(self, params: dict) -> bool:
        """Runs where Snakemake runs (Snakemake's localrules), not as a cluster job."""
        return self.light or self.network(params)


def sized(embedded: tuple[int, int], t5_large: tuple[int, int]) -> dict[str, Resources]:
    """(memory in MB, runtime in minutes) at each scale."""
    return {"embedded": Resources(*embedded), "t5_large": Resources(*t5_large)}


@dataclass(frozen=True)
class Option:
    """One path option of a stage's command: `--flag PATH`, where the engines pass the stage's
    input, output or `dirs` entry named `key`. `role` is what the CLI checks before any work:
    an input directory or file (must exist), an output (locked, a killed run's debris
    removed), or both (evaluate writes into train's results). `required: False` options may
    be left out when the stage runs by hand (the engines pass every option). `passed: False`:
    the path only orders the stage after another (checked, not given to the stage's `run`)."""
    flag: str
    key: str
    help: str
    role: Literal["dir", "file", "out", "dir+out"]
    required: bool = True
    metavar: str = "PATH"
    passed: bool = True

    @property
    def dest(self) -> str:
        """The option's attribute on the parsed arguments (argparse's name for it)."""
        return self.flag.replace("-", "_")


# Options several stages take, with the same meaning.
RAW_OPTION = Option("raw", "raw", "raw data directory (stage download)", "dir")
PREPARED_OPTION = Option("prepared", "prepared", "prepared data directory (stage prepare)", "dir")
VARIANTS_OPTION = Option("variants", "variants", "variants directory (stage counterfactuals)", "dir")
MODELS_OPTION = Option("models", "models", "models directory holding the backbones (stage pretrain)", "dir")
TOKENIZED_OPTION = Option("tokenized", "tokenized", "tokenized variants (stage tokenize); default: tokenize here", "dir",
                   required=False)
FETCHED_OPTION = Option("fetched", "fetched", "fetch manifest (stage fetch): orders this stage after it", "file",
                        required=False, passed=False)


@dataclass(frozen=True)
class Stage:
    """One `cfqa <name>` command and its place in the DAG: what `cfqa --help` (`summary`) and
    `cfqa <name> --help` (`description`) say, its options after `--params ...` (`--<dim>`
    for each dimension it is split by, then `options`), its inputs and outputs by name, the
    params keys it reads, what its jobs need, and whether it reads the run's cache (`cache`:
    the CLI passes it to the stage). An input path naming a dimension the stage is not split
    by is gathered over all its values (the report's); the command names no gathered path."""
    name: str
    summary: str
    description: str
    options: tuple[Option, ...]
    inputs: dict[str, str]
    outputs: dict[str, Output]
    params: tuple[str, ...]
    needs: Needs                    # GPU, network, memory and runtime of one job
    dims: tuple[Dimension, ...] = ()
    # Paths an option names that are neither an input nor an output (the folder holding some).
    dirs: dict[str, str] = dataclasses.field(default_factory=dict)
    cache: bool = False
    root: str = DEFAULT_RUN_ROOT

    def at(self, root: str) -> Stage:
        """This stage writing under run root `root`: every path it reads, writes or logs to is
        moved there, except params.yaml (the project's). The one place a run root applies."""
        if self.root != DEFAULT_RUN_ROOT:
            raise ValueError(f"stage {self.name!r} is already under run root {self.root!r}")
        return dataclasses.replace(
            self,
            inputs={key: rooted(path, root) for key, path in self.inputs.items()},
            outputs={key: dataclasses.replace(o, path=rooted(o.path, root)) for key, o in self.outputs.items()},
            dirs={key: rooted(path, root) for key, path in self.dirs.items()},
            root=root,
        )

    @property
    def module(self) -> str:
        """The module whose `run(cfg, **options)` the CLI calls (validate runs in the CLI)."""
        return f"cfqa.stages.{self.name}"

    @property
    def runs_model(self) -> bool:
        """A stage of one run (split by method): it loads a model on `train.device`."""
        return METHOD in self.dims

    def named_paths(self, wildcards: dict[str, str]) -> dict[str, str]:
        """Each input and output the command can name (not the gathered ones), its dimensions
        filled with `wildcards`."""
        named = [*self.inputs.items(), *((key, o.path) for key, o in self.outputs.items())]
        return {key: fill(path, wildcards) for key, path in named if not self.gathered(path)}

    @property
    def _log_name(self) -> str:
        return "/".join([self.name, *(d.segment for d in self.dims)])

    @property
    def log(self) -> str:
        """The CLI's `--log-file`: its records, tracebacks included."""
        return rooted(JOB_LOG.format(job=self._log_name), self.root)

    @property
    def stderr_log(self) -> str:
        """A Snakemake job's stderr and stdout as the terminal showed them (see `logged`)."""
        return rooted(JOB_STDERR_LOG.format(job=self._log_name), self.root)

    @property
    def benchmark(self) -> str:
        """Snakemake's `benchmark:` file (time and memory of the job), beside the logs."""
        return rooted(JOB_BENCHMARK.format(job=self._log_name), self.root)

    def gathered(self, path: str) -> tuple[Dimension, ...]:
        """The dimensions an input path is expanded over (named in it, not splitting the stage)."""
        named = placeholders(path)
        return tuple(d for d in DIMENSIONS if d.name in named and d not in self.dims)




def compared_summaries(params: dict) -> list[str]:
    """The `results/summary.json` of every run root `report.compare_runs` names: the report reads
    those runs' results beside its own (another model family), so it waits for and reruns after
    their reports. A root's own results are never "other"."""
    own = run_root(params)
    roots = (params.get("report") or {}).get("compare_runs") or []
    return [rooted(COMPARED_SUMMARY, root) for root in roots if root != own]


# What a compared run must hold: its report's summary is written after all its results.
COMPARED_SUMMARY = SUMMARY


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(template) if name}


PACKAGE = "workflow/cfqa"
REPORT_FIGURES = ("headline", "contextual_em", "memorization_ratio", "accuracy_vs_cost", "training_curves")

# The per-run training curves `dvc plots show/diff` draw in one figure (dvc.yaml's top-level
# `plots:`): x and y columns of train_curve.csv, drawn by a vega-lite template of ours (DVC's
# `linear` gives every file its own colour-less line, told apart by dash pattern): one colour
# per method, each seed a thin line of that colour, the seed mean a thick one, dashes per revision.
TRAINING_CURVE_PLOT = {"name": "training_loss", "x": "step", "y": "train_loss",
                       "template": "workflow/dvc_plots/by_method.json",
                       "title": "Training loss by method (thin: each seed; thick: mean over seeds)",
                       "y_label": "training loss"}

STAGES: tuple[Stage, ...] = (
    Stage(
        name="validate",
        summary="check params.yaml completely; write nothing (or a stamp)",
        description="Loads the parameter files and validates every section and every method's options, as each "
                    "stage does before it starts. Writes nothing but the optional --out stamp.",
        options=(Option("out", "stamp", "on success, write this stamp atomically (its bytes do not depend on the "
                                        "parameters)", "out", required=False, metavar="JSON"),),
        inputs={"params": PARAMS_FILE},
        outputs={"stamp": out(VALIDATED)},
        params=(),
        needs=Needs(at=sized((1000, 5), (2000, 5)), light=True),
    ),
    Stage(
        # Needs the network (the only stage that does; every other runs with the hub offline):
        # run it where the network is, e.g. the login node (Snakemake runs it locally).
        name="fetch",
        summary="download the pinned data and hub models into the run's cache (the one stage online)",
        description="Downloads what later stages need from the network into the run's cache (see --cache): NQ "
                    "(data.source nq, each file checked against data.nq.sha256) or its Hugging Face export, and "
                    "the hub models pretrain.hub_id and pretrain.lm_adapted_hub_id at the commits hub.models pins, "
                    "weights checked against their sha256 and a .bin-only checkpoint converted to safetensors. "
                    "Writes a manifest of what it fetched. Every other stage runs with the hub offline.",
        options=(Option("out", "fetched", "fetch manifest JSON to write", "out"),),
        cache=True,
        inputs={"validated": VALIDATED},
        outputs={"fetched": out(FETCHED)},
        params=("data.source", "data.nq", "data.huggingface", "entities.ner", "pretrain.hub_id",
                "pretrain.lm_adapted_hub_id", "hub"),
        # NQ (~5 GB gzipped) and the hub backbones (t5-large and its LM-adapted twin, ~6 GB).
        needs=Needs(at=sized((1000, 10), (8000, 480)), network=always),
    ),
    Stage(
        name="download",
        summary="build the raw dataset (NQ simplified format) from the embedded world or the cache",
        description="Writes the raw dataset in Natural Questions simplified format with a sha256 manifest: the "
                    "embedded offline world (data.source: embedded), NQ itself (nq) or its Hugging Face copy "
                    "(huggingface), the last two from what `cfqa fetch` put in the run's cache.",
        options=(Option("out", "raw", "raw data directory to write", "out"), FETCHED_OPTION),
        cache=True,
        inputs={"validated": VALIDATED, "fetched": FETCHED},
        outputs={"raw": folder(RAW)},
        params=("data",),
        # Reads what `fetch` put in the cache (NQ: ~5 GB gzipped) and converts the dev set.
        needs=Needs(at=sized((2000, 15), (8000, 480))),
    ),
    Stage(
        name="prepare",
        summary="keep questions with a short and a long answer; split",
        description="Streams the raw NQ files, keeps questions with both a short and a long answer (context = the "
                    "long answer's text) and splits NQ train into train/validation by a hash of (prepare.seed, "
                    "example id); test comes from NQ dev. Writes {train,validation,test}.jsonl and stats.json.",
        options=(RAW_OPTION, Option("out", "prepared", "prepared data directory to write", "out")),
        inputs={"validated": VALIDATED, "raw": RAW},
        outputs={"prepared": folder(PREPARED)},
        params=("prepare",),
        needs=Needs(at=sized((2000, 15), (16000, 360))),     # streams the ~17 GB NQ train file
    ),
    Stage(
        name="entities",
        summary="type each answer with spaCy NER",
        description="Labels each prepared answer with its spaCy entity type and Longpre answer-type group.",
        options=(PREPARED_OPTION, RAW_OPTION, Option("out", "entities", "entities directory to write", "out")),
        inputs={"validated": VALIDATED, "prepared": PREPARED, "raw": RAW},
        outputs={"entities": folder(ENTITIES)},
        params=("entities",),
        needs=Needs(at=sized((2000, 15), (16000, 360))),
    ),
    Stage(
        name="counterfactuals",
        summary="entity substitution; factual/counterfactual/empty/random variants",
        description="Builds the factual, counterfactual (answer replaced by another of the same type), empty and "
                    "random contexts of every split and of the `seen` set, and the data statistics.",
        options=(PREPARED_OPTION, Option("entities", "entities", "entities directory (stage entities)", "dir"),
                 Option("out", "variants", "variants directory to write", "out"),
                 Option("stats", "stats", "data statistics JSON to write", "out")),
        inputs={"validated": VALIDATED, "prepared": PREPARED, "entities": ENTITIES},
        outputs={"variants": folder(VARIANTS), "stats": out(DATA_STATS)},
        params=("counterfactuals",),
        needs=Needs(at=sized((2000, 15), (16000, 120))),
    ),
    Stage(
        name="pretrain",
        summary="tokenizer + tiny base model of pretrain.family (or a hub model) saved as safetensors",
        description="pretrain.family t5: trains a sentencepiece tokenizer and pretrains a tiny T5 with span "
                    "corruption, then an LM-adapted copy; gpt_neo: trains a byte-level BPE tokenizer and pretrains "
                    "a tiny GPT-Neo on next-token prediction (its --out-lm directory is a copy). With "
                    "pretrain.hub_id set, saves those hub models instead, loaded offline from the run's cache "
                    "(`cfqa fetch`).",
        options=(RAW_OPTION, Option("out", "base", "base model directory to write", "out"),
                 Option("out-lm", "base_lm", "LM-adapted base model directory to write", "out"), FETCHED_OPTION),
        cache=True,
        inputs={"validated": VALIDATED, "raw": RAW, "fetched": FETCHED},
        outputs={"base": folder(BASE), "base_lm": folder(BASE_LM)},
        params=("pretrain", "hub"),
        # Pretrains the embedded model on CPU, or copies the hub backbones `fetch` put in the
        # cache (t5-large and its LM-adapted twin, ~6 GB).
        needs=Needs(at=sized((2000, 30), (16000, 60))),
    ),
    Stage(
        # Reads no params: jobs truncate the tokens to their own lengths when they load them.
        name="tokenize",
        summary="tokenize every variant file once per backbone tokenizer, for every job",
        description="Tokenizes the inputs and targets (both formats) of every variant file with each distinct "
                    "tokenizer of the backbones, untruncated; train and evaluate jobs load them and truncate to "
                    "their own lengths instead of tokenizing again.",
        options=(VARIANTS_OPTION, MODELS_OPTION, Option("out", "tokenized", "tokenized data directory to write", "out")),
        inputs={"validated": VALIDATED, "variants": VARIANTS, "base": BASE, "base_lm": BASE_LM},
        outputs={"tokenized": folder(TOKENIZED)},
        params=(),
        needs=Needs(at=sized((2000, 15), (16000, 120))),    # fast tokenizers over every variant row, once
        dirs={"models": MODELS},
    ),
    Stage(
        name="tune",
        summary="choose one method's learning rate on the validation set (successive halving)",
        description="Tries tune.trials learning rates (the grid train.lr times tune.lr_factors, extended beyond "
                    "its edge while the best rate is there), each on the real schedule of train.max_steps, "
                    "compares them at tune.rungs by validation contextual EM on tune.variant (then loss) and "
                    "continues the best; keeps the best at the last rung.",
        options=(VARIANTS_OPTION, MODELS_OPTION,
                 Option("out", "selection",
                        "learning-rate selection JSON to write (results/METHOD/lr_selection.json)", "out")),
        inputs={"validated": VALIDATED, "variants": VARIANTS, "base": BASE, "base_lm": BASE_LM},
        outputs={"selection": out(LR_SELECTION)},
        params=("tune", "train", "methods.{method}", "evaluate"),
        # tune.trials runs on train's schedule, the best continuing (successive halving): about
        # 1.6 training runs' steps at the default's budget, one GPU.
        needs=Needs(at=sized((4000, 60), (64000, 2880)), gpu=True),
        dims=(METHOD,),
        dirs={"models": MODELS},    # the backbones: models/base or models/base_lm, by method
    ),
    Stage(
        name="train",
        summary="fine-tune one method with one seed",
        description="Fine-tunes one method of params.yaml `methods` with one seed; saves only its trainable "
                    "weights, the training record and the loss curve. A killed run resumes from its last "
                    "checkpoint.",
        options=(VARIANTS_OPTION, TOKENIZED_OPTION, MODELS_OPTION,
                 Option("out", "model", "trained directory of the run to write (models/METHOD/seedSEED)", "out"),
                 Option("results", "results", "results directory of the run to write (results/METHOD/seedSEED)",
                        "out"),
                 Option("lr-selection", "lr_selection", "train with the learning rate `cfqa tune` chose "
                        "(results/METHOD/lr_selection.json); default: the configured train.lr", "file",
                        required=False)),
        inputs={"validated": VALIDATED, "variants": VARIANTS, "base": BASE, "base_lm": BASE_LM,
                "lr_selection": LR_SELECTION, "tokenized": TOKENIZED},
        outputs={
            "model": folder(RUN_MODEL),
            "train": out(f"{RUN_RESULTS}/{TRAIN_RECORD}"),
            "curve": git_held(f"{RUN_RESULTS}/{TRAIN_CURVE}"),     # drawn by TRAINING_CURVE_PLOT
        },
        params=("train", "methods.{method}"),
        needs=Needs(at=sized((4000, 60), (64000, 1440)), gpu=True, data_parallel=True),
        dims=RUN_DIMS,
        dirs={"models": MODELS, "results": RUN_RESULTS},
    ),
    Stage(
        name="evaluate",
        summary="generate and score one trained run on the test and seen sets",
        description="Generates answers of one trained (method, seed) run on the test and seen sets in all four "
                    "context variants, scores them and logs the run to MLflow.",
        options=(VARIANTS_OPTION, TOKENIZED_OPTION, MODELS_OPTION,
                 Option("model", "model", "trained directory of the run (train's --out)", "dir"),
                 Option("results", "results", "results directory of the run (train's --results; predictions and "
                                              "metrics are written there)", "dir+out")),
        # The backbones: a method's weights are only its trainable part, loaded onto one of them.
        inputs={
            "validated": VALIDATED, "variants": VARIANTS, "base": BASE, "base_lm": BASE_LM,
            "model": RUN_MODEL, "train": f"{RUN_RESULTS}/{TRAIN_RECORD}",
            "curve": f"{RUN_RESULTS}/{TRAIN_CURVE}", "tokenized": TOKENIZED,
        },
        outputs={
            "predictions": out(f"{RUN_RESULTS}/{PREDICTIONS}"),
            "per_question": out(f"{RUN_RESULTS}/{PER_QUESTION}"),   # every metric per question: the report's input
            "metrics": out(f"{RUN_RESULTS}/{METRICS}"),             # the full scores, DVC-cached
            # The run's few numbers: git holds them (data; the report's results/headline.json,
            # the DVC metric, holds their seed means per method).
            "headline": git_held(f"{RUN_RESULTS}/{HEADLINE}"),
            "evaluation_run": untracked(f"{RUN_RESULTS}/{EVALUATION_RUN}"),  # commit, machine, speed
        },
        params=("train", "methods.{method}", "evaluate", "tracking"),
        needs=Needs(at=sized((4000, 30), (32000, 240)), gpu=True),
        dims=RUN_DIMS,
        dirs={"models": MODELS, "results": RUN_RESULTS},
    ),
    Stage(
        name="report",
        summary="tables, plots, HTML and Markdown report, summary metrics",
        description="Aggregates every method and seed into reports/report.md, reports/index.html, figures and the "
                    "summary metrics.",
        options=(Option("results", "results", "results directory (results/)", "dir"),
                 Option("data-stats", "stats", "data statistics JSON (stage counterfactuals)", "file"),
                 Option("out", "reports", "reports directory to write", "out"),
                 Option("summary", "summary", "summary metrics JSON to write", "out"),
                 Option("headline", "headline", "per method, the seed mean and interval of the headline numbers "
                                                "(the DVC metric): JSON to write", "out", required=False)),
        # Every (method, seed) run's files: the report gathers over both dimensions.
        inputs={
            "validated": VALIDATED,
            "metrics": f"{RUN_RESULTS}/{METRICS}",
            "per_question": f"{RUN_RESULTS}/{PER_QUESTION}",
            "train": f"{RUN_RESULTS}/{TRAIN_RECORD}",
            "curves": f"{RUN_RESULTS}/{TRAIN_CURVE}",
            "stats": DATA_STATS,
        },
        outputs={
            "html": out(REPORT_HTML, caption="report.rst", category="Report"),
            "markdown": out(REPORT_MARKDOWN),
            # Keyed apart from the other outputs: the figure "headline" is not the metric "headline".
            **{f"figure_{name}": out(REPORT_FIGURE.format(figure=name), caption=f"{name}.rst", category="Figures")
               for name in REPORT_FIGURES},
            # Every method's ~140 keys (each registered metric): detail, not `dvc metrics show`'s.
            "summary": out(SUMMARY, caption="summary.rst", category="Report"),
            # Per method, the seed mean and interval of the headline numbers: THE DVC metric.
            "headline": metric(RUN_HEADLINE),
        },
        params=("data.source", "pretrain", "seeds", "train", "methods", "tracking", "report"),
        needs=Needs(at=sized((2000, 30), (8000, 60)), light=True),
        dirs={"results": RESULTS, "reports": REPORTS},
    ),
)

STAGE_BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
# Dotted keys of params.yaml per stage; "{method}" is the method wildcard.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {stage.name: stage.params for stage in STAGES}


def stage(name: str) -> Stage:
    try:
        return STAGE_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no stage {name!r} in cfqa.dag; stages: {list(STAGE_BY_NAME)}") from None


def fill(template: str, wildcards: dict[str, str]) -> str:
    """A path or key template with each dimension replaced by its placeholder or value."""
    return template.format(**wildcards)


def arguments(spec: Stage | str, paths: dict[str, str], wildcards: dict[str, str]) -> list[str]:
    """The stage's options after `--params ...`: `--<dim> VALUE` for each dimension it is split
    by, then each option with the path it names. `paths` maps input/output names to what
    stands for them (a path, or Snakemake's `{input.x}`); `wildcards` maps each dimension to
    its value or placeholder. The CLI parses exactly these options (cfqa.cli)."""
    spec = stage(spec) if isinstance(spec, str) else spec
    values = {**paths, **{key: fill(path, wildcards) for key, path in spec.dirs.items()}}
    args: list[str] = []
    for dim in spec.dims:
        args += [f"--{dim.name}", wildcards[dim.name]]
    for option in spec.options:
        args += [f"--{option.flag}", values[option.key]]
    return args


def command(spec: Stage | str, log: str, params_args: str, paths: dict[str, str], wildcards: dict[str, str]) -> str:
    """The stage's command line, as both engines run it (see `arguments`)."""
    spec = stage(spec) if isinstance(spec, str) else spec
    return f"cfqa --log-file {log} {spec.name} {params_args} {' '.join(arguments(spec, paths, wildcards))}"


def logged(cmd: str, stderr_log: str) -> str:
    """A Snakemake job's shell: `cmd` with its stderr and stdout written to `stderr_log` and
    still shown on stderr. A pipe, not bash's `2> >(tee ...)`: the job ends only after tee has
    written the last line, and Snakemake's bash strict mode (pipefail) keeps cmd's exit status.
    A second file, not the CLI's --log-file: the CLI truncates that one when it starts and
    writes at its own offset, which would overwrite what tee appends. DVC's cmd stays `cmd`:
    DVC runs it with the user's $SHELL, where pipefail may not exist (tee's 0 would hide a
    failure). `tee -i` outlives a Ctrl-C, so the CLI's "interrupted" line still reaches both.
    Progress bars stay on when the job's stderr is a terminal: the CLI sees only the pipe."""
    return f"if [ -t 2 ]; then export CFQA_PROGRESS=1; fi; {cmd} 2>&1 | tee -i {stderr_log} >&2"


# A Snakemake job imports the checkout's package: workflow/ first on the module path, so inside
# an image (apptainer binds the working directory) the checkout's code runs, not the image's
# copy. PYTHONPATH is replaced, not extended: a job runs the project's environment only.
CHECKOUT_CODE = 'export PYTHONPATH="$PWD/workflow"'


def job_shell(spec: Stage | str, cmd: str, stderr_log: str, code: str, gpus: str | None = None) -> str:
    """A Snakemake job's shell: `cmd` (the stage's command, the one dvc.yaml runs) started by
    cfqa.launch, which refuses code other than the checkout's (`code`: the stage's code hash
    Snakemake holds), pins a GPU stage's job to its own `gpus` devices on a box whose jobs share
    them, and starts a data-parallel stage given several GPUs as one process per GPU; its output
    also written to `stderr_log` (`logged`)."""
    spec = stage(spec) if isinstance(spec, str) else spec
    launch = f"python -m cfqa.launch --stage {spec.name} --code {code}"
    if spec.needs.gpu:
        launch += f" --gpus {gpus}"
    if spec.needs.data_parallel:
        launch += " --data-parallel"
    return f"{CHECKOUT_CODE}; {logged(f'{launch} -- {cmd}', stderr_log)}"


def scale_of(params: dict) -> str:
    """The scale params.yaml (merged with any profile) names (SCALE_KEY; the schema requires it)."""
    scale = params.get(SCALE_KEY)
    if scale not in SCALES:
        raise KeyError(f"params: {SCALE_KEY} must be one of {list(SCALES)}, got {scale!r}")
    return scale


def job_resources(spec: Stage | str, params: dict) -> dict[str, Any]:
    """What one job of the stage requests at the params' scale: Snakemake's `mem_mb` and
    `runtime` (minutes), and for a GPU stage one NVIDIA GPU (GPU_RESOURCES)."""
    spec = stage(spec) if isinstance(spec, str) else spec
    size = spec.needs.resources(scale_of(params))
    resources: dict[str, Any] = {"mem_mb": size.mem_mb, "runtime": size.runtime_min}
    if spec.needs.gpu:
        resources.update(GPU_RESOURCES)
    return resources


def local_stages(params: dict) -> list[str]:
    """The stages that run where Snakemake runs (its localrules): the light ones and those
    that read the network for these params, which on a cluster is the login node."""
    return [spec.name for spec in STAGES if spec.needs.local(params)]


def stage_param_keys(name: str, method: str | None = None, **wildcards: str) -> list[str]:
    if method is not None:
        wildcards["method"] = method
    return [key.format(**wildcards) for key in stage(name).params]


def lookup(config: dict, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        try:
            value = value[part]
        except (KeyError, TypeError):
            raise KeyError(f"params: no key {dotted!r} (missing {part!r})") from None
    return value


def param_slice(config: dict, name: str, method: str | None = None, **wildcards: str) -> dict[str, Any]:
    """The values a stage reads, keyed by dotted name: what a Snakemake rule declares."""
    return {key: lookup(config, key) for key in stage_param_keys(name, method, **wildcards)}
