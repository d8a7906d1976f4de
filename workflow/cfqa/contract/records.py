"""The typed records of every result file the stages hand on.

Each field carries its unit in its name: `_pct` (0-100), `_bytes`, `_s` (seconds), `_per_s`,
`_nats` (a mean cross-entropy per target token, natural log).
Counts are plain integers. A field that can be absent (a score on an empty set, a measure
only CUDA has) is `| None`; non-finite numbers are written as null. msgspec checks every
field's type on read, so a file of the wrong shape fails with the field's JSON path.

Bump SCHEMA_VERSION whenever a field is renamed, removed or changes meaning; readers refuse
other versions instead of misreading them.
"""
from __future__ import annotations

from typing import Any, Literal

import msgspec

SCHEMA_VERSION = 4   # 3: run info and timings moved out of metrics.json; 4: lr_selection.json's rungs


class Record(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every record: keyword-only, unknown fields are an error on read."""


# ---- run information: what produced a file --------------------------------------------

class Hardware(Record):
    device: str                      # "cpu", "cuda", "cuda:0" ...
    cpu_model: str                   # /proc/cpuinfo "model name" (or platform.processor())
    cpu_count: int
    torch_threads: int               # intra-op threads the stage ran with
    cpu_capability: str              # torch's kernel choice (e.g. AVX512): changes results bit-wise
    blas: str                        # torch's BLAS build (e.g. mkl)
    gpu: str | None = None           # CUDA device name, when one was used


class RunInfo(Record):
    """What a reader needs to tell two results apart and to reproduce one."""

    stage: str
    status: str                      # completed | stopped_early
    git_commit: str                  # "unknown" outside a checkout
    git_dirty: bool | None           # uncommitted changes in tracked files; None without git
    versions: dict[str, str]         # python, cfqa, torch, transformers, peft, accelerate
    hardware: Hardware
    params: dict[str, Any]           # the params.yaml slice the stage read
    data_sha256: str | None = None   # the data files the stage read
    backbone_sha256: str | None = None   # the frozen backbone's files
    # The code that ran, which may not be the checkout's (an image's copy of the package):
    # the sha256 of every file of the imported cfqa package and its params schema, and where
    # that package was (cfqa.contract.run_info.code_sha256).
    code_sha256: str | None = None
    code_path: str | None = None
    # Where a hub backbone came from (cfqa.model.hub's hub_source.json): repo_id, revision (the
    # pinned commit), the weight files' sha256, whether it was converted from .bin; None for a
    # backbone pretrained here or read from a local directory.
    backbone_source: dict[str, Any] | None = None


# ---- train.json -------------------------------------------------------------------------

class ParameterCounts(Record):
    trainable: int
    total: int
    trainable_pct: float


class StepMemoryParts(Record):
    """Memory one training step holds, by part (counted exactly, see cfqa.model.measure)."""

    parameters_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int
    activations_bytes: int           # saved for backward, parameters excluded
    sum_bytes: int                   # the four parts added; not a peak


class TrainCost(Record):
    step_memory: StepMemoryParts
    # Measured peak: growth of the process's peak RSS over its level when training started
    # (CPU), or torch.cuda.max_memory_allocated during training (CUDA). `peak_memory_measure`
    # says which.
    peak_memory_bytes: int | None
    peak_memory_measure: str
    step_time_s: float
    train_examples_per_s: float
    checkpoint_bytes: int
    train_time_s: float
    wall_time_s: float
    processes: int
    # Training time of each complete pass over the training examples (the sum of its optimizer
    # steps' times; validation and checkpoints excluded), and the longest of them. None: not
    # recorded (files written before these fields); an empty list: no epoch was completed.
    epoch_times_s: list[float] | None = None
    max_epoch_time_s: float | None = None


class FirstTargetToken(Record):
    """The targets' first token (the format marker) at the first answer position, teacher-forced
    on the validation examples before and after training (cfqa.training.first_token): its rank
    among the vocabulary (0: the most likely token; lower median over the examples), how often
    it is the most likely, and its mean probability."""
    token: str                       # the most common first target token
    vocabulary: int
    rank_median_before: int
    rank_median_after: int
    top1_before_pct: float
    top1_after_pct: float
    probability_before_pct: float
    probability_after_pct: float


class TrainRecord(Record, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    method: str                      # the params.yaml key, the {method} wildcard
    registry_method: str
    backbone: str                    # base | lm_adapted
    seed: int
    lr: float                        # the learning rate trained with
    lr_selected: bool                # True: chosen by the `tune` stage, not taken from params
    run: RunInfo
    params: ParameterCounts
    cost: TrainCost
    steps: int
    best_step: int
    best_val_loss: float | None
    stopped_early: bool
    resumed_from_step: int | None
    train_examples: int
    validation_examples: int
    # Validation every eval_every steps is on a fixed sample of this many examples
    # (train.validation_examples); the best weights are then scored on the whole set
    # (whole_validation_loss_nats, None when the sample was the whole set). validation_time_s:
    # the time all validation passes took, beside cost.train_time_s. None: written before these fields.
    validation_sample_examples: int | None = None
    whole_validation_loss_nats: float | None = None
    validation_time_s: float | None = None
    first_target_token: FirstTargetToken | None = None   # None: not measured (files written before it)


# ---- train_curve.csv --------------------------------------------------------------------

class CurveRow(Record):
    step: int
    train_loss: float | None
    val_loss: float | None           # None at steps without a validation pass


# ---- predictions.jsonl ------------------------------------------------------------------

class PredictionRow(Record):
    id: str
    set: str                         # test | seen
    variant: str                     # factual | counterfactual | empty | random
    answer_type: str | None
    prediction: str                  # the generated text
    contextual: str                  # parsed contextual answer
    parametric: str | None           # parsed parametric answer (None when not generated)
    gold_contextual: list[str]
    gold_parametric: list[str]
    substitute: str | None


# ---- per_question.jsonl ------------------------------------------------------------------

class QuestionScores(Record):
    """One question of one set and variant, scored once by the evaluate stage: what the report
    aggregates over seeds and questions instead of scoring predictions again."""

    id: str
    set: str                         # test | seen
    variant: str                     # factual | counterfactual | empty | random
    answer_type: str | None
    # metric name (cfqa.scoring.metrics) -> the question's value, 0-1 (a match is 1.0); None where the
    # prediction has no answer for that metric (no parametric line). The reader checks the
    # names against the registry.
    scores: dict[str, float | None]
    # Longpre et al.'s class of the contextual answer on a counterfactual context with a
    # substitute (cfqa.scoring.answer_metrics.memorization_class); None on every other row.
    memorization: Literal["original", "substitute", "other"] | None = None


# ---- metrics.json -----------------------------------------------------------------------

# One set and variant's scores: "n" (questions), every metric of cfqa.scoring.metrics under its field
# (`contextual_em_pct`, ...: the group's mean in percent, None on an empty group), and
# "target_loss_nats": the trained model's mean cross-entropy per target token, teacher-forced
# on the target the training format defines (as the validation loss of training; None: not
# measured). A mapping, not a struct, so that a metric is declared once, in the registry;
# cfqa.contract.files checks the keys where it reads them. A metric a file predates is absent
# (read as None).
VariantScores = dict[str, float | int | None]
VARIANT_FIXED_KEYS = ("n", "target_loss_nats")

# One answer type's scores: "n" and the registry's compared metrics (contextual and parametric EM).
TypeScores = dict[str, float | int | None]


class Memorization(Record):
    """Longpre et al. on counterfactual contexts: shares of contextual answers that give the
    original answer (p_o), the substitute (p_s) or neither; ratio p_o / (p_o + p_s) pooled over
    every counterfactual question, and `known_memorization_ratio_pct` over the `known_n`
    questions whose factual version this run answered correctly (Longpre et al.'s subset: a
    knowledge conflict needs the knowledge). The known fields are None in files written
    before they were recorded."""

    n: int
    original_pct: float | None
    substitute_pct: float | None
    other_pct: float | None
    memorization_ratio_pct: float | None
    known_n: int | None = None
    known_memorization_ratio_pct: float | None = None


class Inference(Record):
    examples_per_s: float
    per_example_ms: float
    batch_size: int
    num_beams: int


class MetricsFile(Record, kw_only=True):
    """metrics.json: the evaluation's scores only, so an identical re-evaluation (same model,
    data and machine) writes the same bytes and DVC does not call it modified."""

    schema_version: int = SCHEMA_VERSION
    method: str
    seed: int
    sets: dict[str, dict[str, VariantScores]]                  # set -> variant
    by_type: dict[str, dict[str, dict[str, TypeScores]]]       # set -> variant -> answer type
    memorization: dict[str, Memorization]                      # set
    most_frequent_em_pct: dict[str, dict[str, float | None]]   # set -> answer type (and "all")
    # The base model's family (params `pretrain.family`: t5 | gpt_neo); the report sets families
    # side by side. None in files written before it was recorded.
    family: str | None = None


class EvaluationRun(Record, kw_only=True):
    """evaluation_run.json: what differs each time the evaluation runs: its provenance (git
    commit, dirty tree, machine) and the speed it measured. Git holds it; DVC does not track it."""

    schema_version: int = SCHEMA_VERSION
    method: str
    seed: int
    run: RunInfo
    inference: Inference
    wall_time_s: float


class MetricsRecord(Record, kw_only=True):
    """One evaluation as readers see it: metrics.json joined with evaluation_run.json beside
    it (cfqa.contract.read_metrics / write_metrics)."""

    schema_version: int = SCHEMA_VERSION
    method: str
    seed: int
    run: RunInfo
    sets: dict[str, dict[str, VariantScores]]
    by_type: dict[str, dict[str, dict[str, TypeScores]]]
    memorization: dict[str, Memorization]
    most_frequent_em_pct: dict[str, dict[str, float | None]]
    inference: Inference
    wall_time_s: float
    family: str | None = None


# ---- results/{method}/seed{seed}/headline.json ----------------------------------------

class Headline(Record, kw_only=True):
    """The few numbers `dvc metrics show/diff` and `dvc exp show` compare for one (method,
    seed) run; git holds this file (metrics.json and the rest are DVC-cached detail).
    Scores are on the `test` set (unseen questions); the memorization ratio also on `seen`."""

    schema_version: int = SCHEMA_VERSION
    test_contextual_em_pct: dict[str, float | None]    # variant -> contextual EM
    memorization_ratio_pct: dict[str, float | None]    # set -> p_o / (p_o + p_s)
    trainable_params: int
    peak_memory_bytes: int | None                      # train.json's measured peak (see TrainCost)
    step_time_s: float                                 # train.json's mean training step time


# ---- results/headline.json (THE DVC metric of a run root) -----------------------------

class MethodHeadline(Record, kw_only=True):
    """One method's entry of results/headline.json: seed means of its runs' headline numbers
    (cfqa.analysis.headline says why these three). The file maps each method to one of these and holds
    nothing else, so `dvc exp show` names its columns `<method>.cf_em%`; no stage reads it.
    Short JSON names (the unit as `%`): every key is a column of `dvc exp show`."""

    cf_em_pct: float | None = msgspec.field(name="cf_em%")              # test counterfactual contextual EM
    cf_em_half_width_pct: float | None = msgspec.field(name="cf_em%±")  # of its 95 % t-interval over seeds
    f_em_pct: float | None = msgspec.field(name="f_em%")                # test factual contextual EM


# ---- results/{method}/lr_selection.json ------------------------------------------------

class LrRung(Record):
    """A trial scored at one rung of the search (a step of the real schedule)."""
    steps: int
    val_contextual_em_pct: float | None   # None: diverged
    val_loss: float | None                # mean per target token on the fixed validation sample


class LrTrial(Record):
    lr: float
    origin: str                      # grid | extension (beyond an edge) | refinement (beside the best)
    status: str                      # finalist (reached the last rung) | pruned | diverged
    rungs: list[LrRung]              # one per rung it reached, in order


class LrSelection(Record, kw_only=True):
    """The `tune` stage's search for one method: every trial at every rung, and the choice."""

    schema_version: int = SCHEMA_VERSION
    method: str
    seed: int
    criterion: str                   # what ranks trials, e.g. "validation counterfactual contextual EM"
    max_steps: int                   # the schedule every trial follows (train.max_steps)
    rung_steps: list[int]            # where trials are compared; the last decides
    trials: list[LrTrial]            # in the order they started
    chosen_lr: float
    searched_lr_range: list[float]   # [lowest, highest] rate tried
    chosen_inside: bool              # a tried rate lies below and above the chosen one
    run: RunInfo


# ---- data/stats.json --------------------------------------------------------------------

class SeenStats(Record):
    requested: int
    size: int
    fresh_substitutes: int


class DataStats(Record, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    policy: str
    substitute_within: str
    seed: int
    ner: str
    counts: dict[str, dict[str, int]]                   # split -> variant -> rows
    variant_coverage: str                               # which questions get which variants
    examples: dict[str, int]                            # split -> typed examples read
    with_counterfactual: dict[str, int]
    drops: dict[str, dict[str, int]]                    # split -> reason -> examples
    answer_types: dict[str, dict[str, dict[str, int]]]  # split -> all|counterfactual -> type
    partial_mentions: dict[str, dict[str, int]]         # split -> what was left unreplaced
    seen: SeenStats
    prepare: dict[str, Any] | None                      # data/prepared/stats.json, as written


# ---- logs/benchmarks/{stage}/{method}/seed{seed}.tsv (Snakemake's `benchmark:`) -------

class BenchmarkRow(Record):
    """One row of a Snakemake benchmark file: what the job took, measured by Snakemake from
    outside the process (it samples the job's process tree; "NA" where nothing was sampled,
    e.g. a job faster than the sampling interval)."""

    wall_time_s: float               # column `s`: wall-clock seconds of the job
    max_rss_bytes: int | None        # peak resident memory (Snakemake writes MiB)
    cpu_time_s: float | None         # CPU seconds of the job's processes


# ---- results/summary.json ---------------------------------------------------------------

class Summary(Record, kw_only=True):
    """The key numbers of every method, flat per method, for `dvc metrics show/diff`."""

    schema_version: int = SCHEMA_VERSION
    methods: dict[str, dict[str, float | int]]
