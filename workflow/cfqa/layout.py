"""Where every file of a run lives, named once.

A run root (params.yaml's `run_root`: "." for the default run, `runs/<name>` for a profile)
holds a run's data/, models/, results/, reports/ and logs/. The templates below name each path
relative to that root with `{method}` and `{seed}` placeholders; the DAG table
(cfqa.dag.table) declares its stages' inputs and outputs with them, and `RunLayout` fills them
for one root, method and seed. The functions below `RunLayout` name files inside one folder
for a stage that is handed the folder (its CLI's `--variants`, `--models`) and not the root.

Only the project's `params.yaml` lies outside every run root. This module imports nothing
of the package but its error base class: every stage may name paths without its code hash
following the result records (cfqa.dag.code hashes what a stage imports).
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from cfqa.errors import BadInput

PARAMS_FILE = "params.yaml"
DEFAULT_RUN_ROOT = "."

# A seed's folder is named `seed{seed}` (a folder name that says what it holds).
SEED_PREFIX = "seed"
_SEED_FOLDER = re.compile(rf"{SEED_PREFIX}(\d+)")

# File names inside a run's results/{method}/seed{seed}/ and models/{method}/seed{seed}/
# (cfqa.contract.MethodFiles names them for one run's folder).
TRAIN_RECORD = "train.json"
TRAIN_CURVE = "train_curve.csv"
PREDICTIONS = "predictions.jsonl"
PER_QUESTION = "per_question.jsonl"      # every metric per question (evaluate): what the report reads
METRICS = "metrics.json"
EVALUATION_RUN = "evaluation_run.json"
HEADLINE = "headline.json"
WEIGHTS = "trainable.safetensors"
LR_SELECTION_FILE = "lr_selection.json"

# ---- the folders and files of a run, relative to its root --------------------------------
DATA = "data"
RAW = f"{DATA}/raw"
PREPARED = f"{DATA}/prepared"
ENTITIES = f"{DATA}/entities"
VARIANTS = f"{DATA}/variants"
TOKENIZED = f"{DATA}/tokenized"
DATA_STATS = f"{DATA}/stats.json"
# Written by `fetch`, the one stage that uses the network.
FETCHED = f"{DATA}/fetched.json"
MODELS = "models"
BASE = f"{MODELS}/base"
BASE_LM = f"{MODELS}/base_lm"
RESULTS = "results"
# Written by `validate` once params.yaml loads and validates (see cfqa.dag.table).
VALIDATED = f"{RESULTS}/.validated"
SUMMARY = f"{RESULTS}/summary.json"
RUN_HEADLINE = f"{RESULTS}/headline.json"
REPORTS = "reports"
REPORT_HTML_FILE = "index.html"
REPORT_MARKDOWN_FILE = "report.md"
REPORT_FIGURE_FILE = "{figure}.png"
REPORT_HTML = f"{REPORTS}/{REPORT_HTML_FILE}"
REPORT_MARKDOWN = f"{REPORTS}/{REPORT_MARKDOWN_FILE}"
REPORT_FIGURE = f"{REPORTS}/{REPORT_FIGURE_FILE}"
LOGS = "logs"
# A job of a stage split by method and seed is named `{stage}/{method}/seed{seed}`.
JOB_LOG = f"{LOGS}/{{job}}.log"
JOB_STDERR_LOG = f"{LOGS}/{{job}}.stderr.log"
JOB_BENCHMARK = f"{LOGS}/benchmarks/{{job}}.tsv"

# One run: a method trained (and evaluated) with one seed.
RUN = f"{{method}}/{SEED_PREFIX}{{seed}}"
RUN_MODEL = f"{MODELS}/{RUN}"
RUN_RESULTS = f"{RESULTS}/{RUN}"
# One per method, written by `tune`.
LR_SELECTION = f"{RESULTS}/{{method}}/{LR_SELECTION_FILE}"
# An interrupted training run's checkpoint, under the --models folder, resumed by its rerun.
CHECKPOINTS = f".checkpoints/{RUN}"


def rooted(path: str, root: str) -> str:
    """`path` (relative to a run root) under run root `root`; params.yaml stays the project's."""
    if root == DEFAULT_RUN_ROOT or path == PARAMS_FILE:
        return path
    return posixpath.join(root, path)


def run_folder(method: str, seed: int | str) -> str:
    """`{method}/seed{seed}`: one run's folder under models/ and results/."""
    return RUN.format(method=method, seed=seed)


def seed_of(folder_name: str) -> int | None:
    """The seed a run's folder name holds (`seed3` -> 3); None for any other name."""
    match = _SEED_FOLDER.fullmatch(folder_name)
    return int(match.group(1)) if match else None


def job_name(stage: str, method: str | None = None, seed: int | str | None = None) -> str:
    """A job's name in logs/: the stage, then the method and seed it is split by."""
    parts = [stage] + ([method] if method is not None else []) + \
        ([f"{SEED_PREFIX}{seed}"] if seed is not None else [])
    return "/".join(parts)


# ---- files inside one folder a stage is handed -------------------------------------------

def variant_file(variants: Path, split: str, variant: str) -> Path:
    """One variant of one question set under the `counterfactuals` output folder
    (data/variants/{split}/{variant}.jsonl)."""
    return Path(variants) / split / f"{variant}.jsonl"


def checkpoint_dir(models: Path, method: str, seed: int | str) -> Path:
    """Where an interrupted run's checkpoint waits to be resumed, under the models folder: one
    per (method, seed)."""
    return Path(models) / CHECKPOINTS.format(method=method, seed=seed)


class NotARunFolder(BadInput, ValueError):
    """A folder handed as a run's folder is not where the layout puts one."""


@dataclass(frozen=True)
class RunLayout:
    """Every path of the run under `root` (params `run_root`), as the DAG table declares it."""

    root: str = DEFAULT_RUN_ROOT

    @classmethod
    def of_results(cls, results: str | Path) -> RunLayout:
        """The run whose results folder is `results` (a stage handed only that folder): its
        root is the folder holding results/."""
        results = Path(results)
        if results.name != RESULTS:
            raise NotARunFolder(f"{results}: expected a run's {RESULTS}/ folder (<run root>/{RESULTS}), "
                                f"the folder its logs/ and models/ stand beside")
        parent = results.parent.as_posix()
        return cls(DEFAULT_RUN_ROOT if parent in ("", ".") else parent)

    def path(self, relative: str) -> Path:
        """A path relative to the run root (one of this module's templates, filled)."""
        return Path(rooted(relative, self.root))

    # data
    @property
    def raw(self) -> Path:
        return self.path(RAW)

    @property
    def prepared(self) -> Path:
        return self.path(PREPARED)

    @property
    def entities(self) -> Path:
        return self.path(ENTITIES)

    @property
    def variants(self) -> Path:
        return self.path(VARIANTS)

    def variant_file(self, split: str, variant: str) -> Path:
        return variant_file(self.variants, split, variant)

    @property
    def tokenized(self) -> Path:
        return self.path(TOKENIZED)

    @property
    def data_stats(self) -> Path:
        return self.path(DATA_STATS)

    @property
    def fetched(self) -> Path:
        return self.path(FETCHED)

    # models
    @property
    def models(self) -> Path:
        return self.path(MODELS)

    @property
    def base(self) -> Path:
        return self.path(BASE)

    @property
    def base_lm(self) -> Path:
        return self.path(BASE_LM)

    def model(self, method: str, seed: int | str) -> Path:
        """A run's trained folder (train's --out): its trainable weights."""
        return self.path(RUN_MODEL.format(method=method, seed=seed))

    def checkpoints(self, method: str, seed: int | str) -> Path:
        return checkpoint_dir(self.models, method, seed)

    # results
    @property
    def results(self) -> Path:
        return self.path(RESULTS)

    def run_results(self, method: str, seed: int | str) -> Path:
        """A run's results folder (train's and evaluate's --results), whose files
        cfqa.contract.MethodFiles names."""
        return self.path(RUN_RESULTS.format(method=method, seed=seed))

    def lr_selection(self, method: str) -> Path:
        return self.path(LR_SELECTION.format(method=method))

    @property
    def validated(self) -> Path:
        return self.path(VALIDATED)

    @property
    def summary(self) -> Path:
        return self.path(SUMMARY)

    @property
    def run_headline(self) -> Path:
        return self.path(RUN_HEADLINE)

    @property
    def reports(self) -> Path:
        return self.path(REPORTS)

    @property
    def report_html(self) -> Path:
        return self.path(REPORT_HTML)

    @property
    def report_markdown(self) -> Path:
        return self.path(REPORT_MARKDOWN)

    def report_figure(self, figure: str) -> Path:
        return self.path(REPORT_FIGURE.format(figure=figure))

    # logs
    def log(self, stage: str, method: str | None = None, seed: int | str | None = None) -> Path:
        """The CLI's --log-file of a job."""
        return self.path(JOB_LOG.format(job=job_name(stage, method, seed)))

    def stderr_log(self, stage: str, method: str | None = None, seed: int | str | None = None) -> Path:
        return self.path(JOB_STDERR_LOG.format(job=job_name(stage, method, seed)))

    def benchmark(self, stage: str, method: str | None = None, seed: int | str | None = None) -> Path:
        """Snakemake's `benchmark:` record of a job (absent for runs made by DVC or by hand)."""
        return self.path(JOB_BENCHMARK.format(job=job_name(stage, method, seed)))
