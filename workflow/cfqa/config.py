"""The one typed configuration, built from params.yaml (plus optional override files).

Every default lives in params.yaml; this module only types, merges and validates. Files
given later override earlier ones key by key (a profile's params.yaml on top of the default);
a `methods` entry set to null in a later file removes that method.

The dataclasses below are the one declaration of every key: its type, range, names and
default. The JSON schema workflow/schemas/params.schema.yaml, the one Snakemake's
`validate()` uses, is GENERATED from them and from each method's options class
(cfqa.methods.options): `python -m cfqa.config_schema --write` after changing a key; a test
fails when the committed file is stale.

Two checks, both when the configuration loads: the JSON schema (shape, names, ranges) and
then the same dataclasses validated by pydantic. The second pass is what the schema cannot
say: an int is not 16.0 or true (JSON Schema counts 16.0 as an integer), numbers are finite
(it accepts NaN and infinity), a method's options are complete once a block inherits from
another, and each method applies to the family of the base model (`pretrain.family`).
`validate_config` is the entry point for Snakemake's parse.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal, Mapping, get_args, get_origin

import jsonschema
import yaml
from pydantic import (AfterValidator, Field, StrictBool, StrictInt, StrictStr, TypeAdapter,
                      ValidationError, WithJsonSchema, with_config)
from pydantic.json_schema import SkipJsonSchema

from cfqa.io import params_file
from cfqa.errors import BadInput
from cfqa.layout import DEFAULT_RUN_ROOT
from cfqa.methods.families import UnsupportedFamily, check_method_family
from cfqa.methods.options import METHOD_OPTIONS, TYPED, Count, MethodOptions, Number, distinct, options_record
from cfqa.model.model_family import ModelFamily
from cfqa.io.redact import redact

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = PROJECT_ROOT / "workflow" / "schemas" / "params.schema.yaml"
DEFAULT_PARAMS = Path("params.yaml")

# Backbone name -> its directory under models/, written by `cfqa pretrain`. A method's
# outputs go to models/<method key>/seed<seed>/, so no method key may be one of these directories.
BACKBONE_DIRS = {"base": "base", "lm_adapted": "base_lm"}
RESERVED_METHOD_KEYS = tuple(sorted(BACKBONE_DIRS.values()))

# `pretrain.family` -> the model family its base model belongs to.
PRETRAIN_FAMILIES = {"t5": ModelFamily.SEQ2SEQ, "gpt_neo": ModelFamily.CAUSAL}
# A byte-level BPE vocabulary holds the 256 bytes, eos and pad before any merge.
BYTE_LEVEL_MIN_VOCABULARY = 258

Source = str | Callable[[tuple], str]

# ---------------------------------------------------------------------------- value types
# Each is declared once, with what the schema says of it (ranges, patterns and the
# description that error messages quote) and what pydantic checks.

SEED_LIMIT = 2 ** 32                 # numpy and Python's random take seeds in [0, 2**32)
# Patterns end in \Z, not $: Python's `$` (jsonschema applies `pattern` with re.search) also
# matches before a final newline, and a value such as "runs/x\n" would split a shell command.
NAME_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?\Z"
RUN_PATH_PATTERN = r"^(\.|[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*)\Z"
METHOD_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,63}\Z"
# A run root may not lie inside the outputs of a run at the project root.
RUN_OUTPUT_DIRS = ("data", "models", "results", "reports", "logs")
_INSIDE_OUTPUTS = rf"^({'|'.join(RUN_OUTPUT_DIRS)})(/|\Z)"

Seed = Annotated[StrictInt, Field(ge=0, le=SEED_LIMIT - 1)]
Threads = Count
NonNegative = Annotated[StrictInt, Field(ge=0)]
Fraction = Annotated[Number, Field(gt=0, lt=1)]
Positive = Annotated[Number, Field(gt=0)]
Variant = Literal["factual", "counterfactual", "empty", "random"]
# A name, an id, a URI or a path: one line, not empty, no space at either end.
Name = Annotated[StrictStr, Field(min_length=1, max_length=1000, pattern=NAME_PATTERN,
                                  description="one line of text, not empty, no space at either end")]
# JSON Schema's `type: [string, "null"]` (not anyOf), so its error quotes the description.
OptionalName = Annotated[StrictStr | None, Field(min_length=1, max_length=1000, pattern=NAME_PATTERN),
                         WithJsonSchema({"description": "null or one line of text, not empty, no space at either end",
                                         "type": ["string", "null"], "minLength": 1, "maxLength": 1000,
                                         "pattern": NAME_PATTERN})]
Sha256 = Annotated[StrictStr | None, Field(pattern=r"^[0-9a-f]{64}\Z")]
WeightFile = Annotated[StrictStr, Field(pattern=r"^[^/]+(/[^/]+)*\.(safetensors|bin)\Z")]
# A run root: a relative folder of plain segments (see run_root).
RUN_PATH_SCHEMA = {"description": 'a relative folder: "." or segments of letters, digits, "_", "-" and "." '
                                  '(not leading) joined by "/"', "type": "string", "pattern": RUN_PATH_PATTERN}
RunPath = Annotated[StrictStr, Field(pattern=RUN_PATH_PATTERN), WithJsonSchema(RUN_PATH_SCHEMA)]


def _outside_outputs(root: str) -> str:
    if re.match(_INSIDE_OUTPUTS, root):
        raise ValueError(f"{root!r} is ruled out here: a run root lies outside the default run's "
                         f"{', '.join(RUN_OUTPUT_DIRS)} folders")
    return root


RUN_ROOT_DESCRIPTION = (
    'The folder every output of the run goes under (data/, models/, results/, reports/, logs/): "." for '
    "the default run, a relative path such as runs/mixtures for a profile, so that a profile never writes "
    'over the default run\'s files. Path segments of letters, digits, "_", "-" and "." (not leading), inside '
    "the project and outside its own data/, models/, results/, reports/ and logs/ folders.")
RunRoot = Annotated[StrictStr, Field(pattern=RUN_PATH_PATTERN), AfterValidator(_outside_outputs),
                    WithJsonSchema({"description": RUN_ROOT_DESCRIPTION, "allOf": [RUN_PATH_SCHEMA],
                                    "not": {"type": "string", "pattern": _INSIDE_OUTPUTS}})]
# A method key names output folders (models/<key>/) and is a shell word in every engine's command.
MethodKey = Annotated[StrictStr, Field(pattern=METHOD_KEY_PATTERN, description=(
    "a method key: a lower-case letter, then at most 63 lower-case letters, digits or _"))]


def _distinct_items(item_type, min_length: int = 1):
    """A list of distinct items (JSON Schema's uniqueItems), at least `min_length` of them."""
    return Annotated[tuple[item_type, ...], Field(min_length=min_length), AfterValidator(distinct),
                     Field(json_schema_extra={"uniqueItems": True})]


class ConfigError(BadInput, ValueError):
    """params.yaml does not match the schema; the message names the file and the key."""


def memory_advice(method: str = "<method>") -> str:
    """What to change when a training step does not fit in memory."""
    return ("lower train.batch_size (raise train.grad_accum_steps to keep the effective batch, "
            "batch_size x grad_accum_steps) or set train.gradient_checkpointing: true, in the shared "
            f"`train` block or in methods.{method}.train")


@with_config(TYPED)
@dataclass(frozen=True)
class EmbeddedWorldConfig:
    seed: Seed
    min_city_population: NonNegative
    max_cities_per_country: Count
    min_subjects_per_answer: Count
    test_fraction: Fraction


@with_config(TYPED)
@dataclass(frozen=True)
class NQSourceConfig:
    train_url: Name
    dev_urls: Annotated[tuple[Name, ...], Field(min_length=1)]
    sha256: Annotated[dict[StrictStr, Sha256], Field(description=(
        "the sha256 of each downloaded file by file name (the URL's last segment); null is not yet pinned, "
        "and `cfqa fetch` refuses the file (as it refuses one whose digest differs)"))]


@with_config(TYPED)
@dataclass(frozen=True)
class HuggingFaceSourceConfig:
    dataset_id: Name


@with_config(TYPED)
@dataclass(frozen=True)
class DataConfig:
    source: Literal["embedded", "nq", "huggingface"]
    embedded: EmbeddedWorldConfig
    nq: NQSourceConfig
    huggingface: HuggingFaceSourceConfig


@with_config(TYPED)
@dataclass(frozen=True)
class PrepareConfig:
    seed: Seed
    validation_fraction: Fraction
    drop_table_and_list_contexts: StrictBool
    max_bad_records: NonNegative


@with_config(TYPED)
@dataclass(frozen=True)
class EntitiesConfig:
    ner: Name
    groups: dict[StrictStr, Annotated[tuple[Name, ...], Field(min_length=1)]]

    def group_of(self, label: str | None) -> str | None:
        """The Longpre answer-type group of a spaCy label, or None if it is in no group."""
        for group, labels in self.groups.items():
            if label in labels:
                return group
        return None


@with_config(TYPED)
@dataclass(frozen=True)
class CounterfactualConfig:
    seed: Seed
    policy: Literal["corpus_substitution", "type_swap"]
    substitute_within: Literal["label", "group"]
    seen_size: Count
    train_counterfactuals_per_question: Count


@with_config(TYPED)
@dataclass(frozen=True)
class PretrainConfig:
    family: Annotated[Literal["t5", "gpt_neo"], Field(    # the base model `cfqa pretrain` builds (or hub_id loads)
        description="the base model's family: T5 (seq2seq) or GPT-Neo (causal)")]
    hub_id: OptionalName
    lm_adapted_hub_id: OptionalName
    seed: Seed
    threads: Threads
    vocab_size: Annotated[StrictInt, Field(ge=50)]
    d_model: Annotated[StrictInt, Field(ge=8)]
    num_layers: Count
    num_decoder_layers: Count
    num_heads: Count
    d_ff: Annotated[StrictInt, Field(ge=8)]
    max_length: Annotated[StrictInt, Field(ge=8)]
    batch_size: Count
    steps: Count
    lr: Positive
    noise_density: Fraction
    mean_noise_span_length: Annotated[Number, Field(ge=1)]
    lm_adapt_steps: NonNegative


@with_config(TYPED)
@dataclass(frozen=True)
class TrainConfig:
    threads: Threads
    max_steps: Count
    batch_size: Count
    grad_accum_steps: Count
    optimizer: Literal["adamw", "adafactor"]
    lr: Positive
    weight_decay: Annotated[Number, Field(ge=0)]
    warmup_steps: NonNegative
    clip_norm: Positive
    bf16: StrictBool
    gradient_checkpointing: StrictBool
    eval_every: Count
    early_stopping_patience: NonNegative
    max_input_length: Annotated[StrictInt, Field(ge=8)]
    max_target_length: Annotated[StrictInt, Field(ge=4)]
    mixture: _distinct_items(Variant)
    target_format: Literal["disentangled", "single"]
    # What tune, train and evaluate run the model on (cfqa.model.device).
    device: Annotated[Literal["cuda", "cpu", "auto"], Field(description=(
        "What tune, train and evaluate run the model on: cuda (a GPU; a job that finds no usable CUDA stops "
        "at once naming what it found), cpu, or auto (CUDA where torch can use it, else the CPU)."))]
    batching: Literal["random", "length", "stratified"]   # how batches are drawn (cfqa.training.batches)
    group_batches: Annotated[StrictInt, Field(ge=2)]   # batches per length-sorted chunk (length, stratified)
    validation_examples: NonNegative  # the fixed sample validated every eval_every steps; 0: the whole set
    validation_seed: Seed             # draws that sample: the same for every run, so their curves compare
    # The run's seed, never a key of params.yaml (so not in the schema): each run takes one
    # value of the top-level `seeds` list (the {seed} wildcard) through `Config.method(name,
    # seed)`. None in the shared `train` section and in `Config.methods`, which no run trains
    # from directly.
    seed: SkipJsonSchema[StrictInt | None] = None

    def memory_knobs(self, method: str = "<method>") -> str:
        """The settings that change a training step's memory, with their values, and what to do."""
        return (f"train.batch_size is {self.batch_size}, train.grad_accum_steps {self.grad_accum_steps}, "
                f"train.gradient_checkpointing {str(self.gradient_checkpointing).lower()}: "
                f"{memory_advice(method)}")


Backbone = Literal["base", "lm_adapted"]


@with_config(TYPED)
@dataclass(frozen=True)
class MethodBlock:
    """One entry of params.yaml `methods` as written, every key optional (the schema lists none
    as required): `method` is the block's key unless given, `backbone` base; `train` overrides
    keys of the shared `train` block (`method_train`), `options` those of the registry method's
    options class, or of the block named after that method (`method_options`). The JSON schema
    types `train` and `options` from TrainConfig and the options classes (cfqa.config_schema)."""

    method: Name          # the registry name; the block's key when not given
    backbone: Backbone
    train: dict[StrictStr, Any]
    options: Annotated[dict[StrictStr, Any], Field(description=(
        "the registry method's options: every one set, in this block or (for a block whose key is not the "
        "method's name) in the block named after the method"))]


@dataclass(frozen=True)
class MethodConfig:
    """One entry of params.yaml `methods`: a registry method, its backbone, its settings."""

    name: str                 # the run's name (the key in params.yaml, the {method} wildcard)
    method: str               # the registry entry it uses
    backbone: Backbone
    train: TrainConfig        # shared `train` defaults overridden by this block's `train` (method_train)
    options: MethodOptions    # the registry method's options class, every option set

    def options_record(self) -> dict[str, Any]:
        """The options as plain JSON values (lists, not tuples), for result files and tracking."""
        return options_record(self.options)


@with_config(TYPED)
@dataclass(frozen=True)
class TuneConfig:
    """Learning-rate search per method (stage `tune`, cfqa.training.lr_search): a log grid
    around the method's configured `train.lr`, extended beyond its edge while the best rate is
    there, then successive halving on the real schedule; one seed, validation data only."""

    lr_factors: _distinct_items(Positive)   # the initial grid: the method's train.lr times each factor
    trials: Count                     # rates tried per method, the same for every method
    rungs: _distinct_items(Annotated[Number, Field(gt=0, le=1)])   # fractions of train.max_steps where trials are compared
    keep_fraction: Annotated[Number, Field(gt=0, le=1)]   # share of trials that continue after each rung but the last
    variant: Variant                  # ranks trials by its validation contextual EM
    validation_examples: Count        # a fixed sample of the validation mixture scores the loss
    seed: Seed

    def __post_init__(self):
        if self.trials < len(self.lr_factors):
            raise ValueError(f"trials ({self.trials}) must be at least the number of lr_factors "
                             f"({len(self.lr_factors)}): the initial grid is tried first")
        if len(self.lr_factors) == 1 and self.trials != 1:
            raise ValueError(f"with one lr factor, trials must be 1, got {self.trials}: a grid of one point "
                             f"has no spacing to extend it by")


@with_config(TYPED)
@dataclass(frozen=True)
class HubModelPin:
    """A hub model pinned: its commit and the sha256 of each weight file (cfqa.model.hub)."""
    revision: Annotated[StrictStr | None, Field(pattern=r"^[0-9a-f]{40}\Z")]   # null: not yet pinned (`cfqa fetch` refuses)
    sha256: Annotated[dict[WeightFile, Sha256], Field(min_length=1)]   # weight file name -> sha256 (null: not yet pinned)


@with_config(TYPED)
@dataclass(frozen=True)
class HubConfig:
    models: Annotated[dict[StrictStr, HubModelPin], Field(description=(
        "every hub model a stage loads (pretrain.hub_id, pretrain.lm_adapted_hub_id), by hub id: the commit "
        "`cfqa fetch` downloads and the sha256 of each weight file it checks; null is not yet pinned, and "
        "fetch refuses it"))]


@with_config(TYPED)
@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: Count
    max_new_tokens: Count
    num_beams: Count
    threads: Threads


@with_config(TYPED)
@dataclass(frozen=True)
class TrackingConfig:
    uri: Name
    experiment: Name


@with_config(TYPED)
@dataclass(frozen=True)
class PrimaryEndpoint:
    """The one comparison the report resolves (each method − full fine-tuning on this question
    set, context variant and answer): its minimum detectable difference and verdicts; every
    other number is descriptive."""

    set: Literal["test", "seen"] = "test"
    variant: Variant = "counterfactual"
    metric: Literal["contextual_em", "parametric_em"] = "contextual_em"


@with_config(TYPED)
@dataclass(frozen=True)
class ReportConfig:
    notes: tuple[StrictStr, ...]     # the report's "Limitations" bullets
    # Other runs' roots (e.g. a profile's runs/gpt-neo-embedded, or "." for the default run)
    # whose results the report shows beside this run's: another model family side by side.
    compare_runs: Annotated[tuple[RunPath, ...], Field(description=(
        'Other runs\' roots ("." is the default run, runs/<profile> a profile\'s) whose results the report '
        "shows beside this run's, e.g. another model family; each must hold a finished run (its "
        "results/summary.json)."))] = ()
    primary_endpoint: PrimaryEndpoint = PrimaryEndpoint()


@dataclass(frozen=True)
class Config:
    data: DataConfig
    prepare: PrepareConfig
    entities: EntitiesConfig
    counterfactuals: CounterfactualConfig
    pretrain: PretrainConfig
    train: TrainConfig
    methods: dict[str, MethodConfig]     # params.yaml holds dict[MethodKey, MethodBlock | None]
    tune: TuneConfig
    hub: HubConfig
    evaluate: EvaluateConfig
    tracking: TrackingConfig
    report: ReportConfig
    seeds: Annotated[_distinct_items(Seed), Field(
        description="every method is trained and evaluated once per seed (the {seed} wildcard)")]
    # The size of run these params describe: the DAG table's memory and runtime per job are
    # read at this scale (cfqa.dag.SCALES). Snakemake reads it; no stage does.
    scale: Annotated[Literal["embedded", "t5_large"], Field(description=(
        "The size of run these params describe: each job's memory and runtime are the DAG table's values "
        "(workflow/cfqa/dag/table.py) at this scale. embedded: the embedded world and a model of a few "
        "million parameters on CPU; t5_large: Natural Questions with T5-large, one 80 GB GPU per tune, "
        "train and evaluate job."))]
    # Where every output of the run goes (cfqa.dag.rooted): a profile names its own.
    run_root: RunRoot = DEFAULT_RUN_ROOT

    def method(self, name: str, seed: int) -> MethodConfig:
        """Method `name` as one run trains it: its `train.seed` is `seed`."""
        if name not in self.methods:
            raise ConfigError(f"method {name!r} is not in params.yaml `methods` ({sorted(self.methods)})")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"method {name!r}: seed must be an integer >= 0, got {seed!r}")
        mcfg = self.methods[name]
        return dataclasses.replace(mcfg, train=dataclasses.replace(mcfg.train, seed=seed))


RUN_ROOT_KEY = "run_root"


def run_root(raw: Mapping) -> str:
    """The run root merged parameters name (Config.run_root); its default when they name none."""
    return raw.get(RUN_ROOT_KEY) or DEFAULT_RUN_ROOT


def deep_merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, recursively for mappings; lists and scalars replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@functools.cache
def _schema_validator() -> jsonschema.Draft202012Validator:
    """The committed schema's validator, read once per process (the file is over 1,000 lines)."""
    return jsonschema.Draft202012Validator(load_schema())


# Keywords whose failure is told by the described schema ("expected a method key: ..."), not by
# jsonschema's message, which for a pattern is the regular expression itself.
_DESCRIBED_KEYWORDS = ("pattern", "minLength", "maxLength")


def _schema_message(error: jsonschema.ValidationError) -> str:
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if described and error.validator in _DESCRIBED_KEYWORDS:
        return f"expected {described}, got {error.instance!r}"
    if error.validator == "not":          # jsonschema would print the whole excluded schema
        return f"{error.instance!r} is ruled out here" + (f": {' '.join(described.split())}" if described else "")
    return error.message


def schema_errors(raw: dict) -> list[tuple[tuple, str]]:
    """(key path, message) for every schema violation."""
    errors = sorted(_schema_validator().iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    return [(tuple(e.absolute_path), _schema_message(e)) for e in errors]


# ---------------------------------------------------------------------------- every value
# What holds for every key and value of a parameter file, whatever its section: keys that can
# name a folder or a shell word safely, integers a C library can take, seeds numpy can take,
# and strings without control characters (tab and newline aside, for free text). Written once
# for all keys, so a key added later is covered without a line here.

MAX_KEY_CHARS = 64
INT_LIMIT = 2 ** 63                  # an int64: what torch, numpy and the JSON writers hold
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_KEY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_MESSAGE_CHARS = 400             # a value quoted in an error: enough to recognise it


def value_errors(value: Any, path: tuple = ()) -> list[tuple[tuple, str]]:
    """(key path, message) for every key and value that no parameter may have."""
    errors: list[tuple[tuple, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append((path, f"key {key!r} is a {type(key).__name__}; keys are text"))
            elif not key or len(key) > MAX_KEY_CHARS or _KEY_CONTROL.search(key):
                errors.append((path, f"expected a key of 1 to {MAX_KEY_CHARS} characters on one line, got {key!r}"))
            else:
                errors += value_errors(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors += value_errors(item, (*path, index))
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        seeded = any(part in ("seed", "seeds") for part in path[-2:] if isinstance(part, str))
        if seeded and not 0 <= value < SEED_LIMIT:
            errors.append((path, f"expected a seed, an integer from 0 to 2**32 - 1 = {SEED_LIMIT - 1}, got {value}"))
        elif not -INT_LIMIT <= value < INT_LIMIT:
            errors.append((path, f"expected an integer that fits in 64 bits, got {value}"))
    elif isinstance(value, str) and _CONTROL.search(value):
        errors.append((path, f"expected text without control characters, got {value!r}"))
    return errors


def _raise(errors: list[tuple[tuple, str]], source: Source) -> None:
    """ConfigError listing each (key path, message) once, with the file that set the key;
    credentials in URLs masked and each message cut to a readable length."""
    if not errors:
        return
    where = source if callable(source) else (lambda _path: source)
    lines = [f"{where(path)}: {'.'.join(map(str, path)) or '<top>'}: {_shortened(redact(message))}"
             for path, message in errors]
    raise ConfigError("invalid parameters:\n  " + "\n  ".join(dict.fromkeys(lines)))


def _shortened(message: str) -> str:
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    return f"{message[:_MAX_MESSAGE_CHARS]}… ({len(message):,} characters)"


def validate(raw: dict, source: Source = "params") -> None:
    """Raises ConfigError listing every violation (the rules for every value, then the schema)
    with its dotted key; `source` names the file (or, given a function, the file that set that
    key)."""
    errors = value_errors(raw)
    flagged = {path for path, _ in errors}
    _raise(errors + [(path, message) for path, message in schema_errors(raw)
                     if path not in flagged and not _method_option(path)], source)


def _method_option(path: tuple) -> bool:
    """A key path inside a method block's `options`. The schema checks options too (Snakemake,
    editors), but the typed pass words the same faults better: it names the method, the
    allowed keys and what was expected, and it sees an inherited block's options merged."""
    return len(path) >= 3 and path[0] == "methods" and path[2] == "options"


def read_params(paths: Iterable[str | Path]) -> dict:
    """The files merged in order, each read within cfqa.io.params_file's limits (size, UTF-8,
    nesting, alias expansion)."""
    raw: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: parameter file not found")
        try:
            content = params_file.read(path) or {}
        except params_file.ParamsFileError as error:
            raise ConfigError(str(error)) from error
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw = deep_merge(raw, content)
    return raw


# ---------------------------------------------------------------------------- typed values

@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


@functools.cache
def _config_field(name: str):
    """The annotation of Config's field `name`, constraints included."""
    return typing.get_type_hints(Config, include_extras=True)[name]


def _typed_adapter(annotation) -> TypeAdapter:
    # A dataclass carries its own config; a bare annotation (seeds, run_root) takes TYPED, whose
    # regex engine reads the patterns' \Z.
    if dataclasses.is_dataclass(annotation):
        return _adapter(annotation)
    key = repr(annotation)          # Field(...) metadata is not hashable
    if key not in _BARE_ADAPTERS:
        _BARE_ADAPTERS[key] = TypeAdapter(annotation, config=TYPED)
    return _BARE_ADAPTERS[key]


_BARE_ADAPTERS: dict[str, TypeAdapter] = {}


def _strip(annotation) -> tuple[Any, list]:
    """(the type under Annotated[...], its constraint objects)."""
    if get_origin(annotation) is not Annotated:
        return annotation, []
    base, *metadata = get_args(annotation)
    # Field(...) carries its annotated_types constraints in `.metadata`
    return base, [c for item in metadata for c in getattr(item, "metadata", [item])]


def describe(annotation) -> str:
    """What a value of this annotation must be, in words: "an integer >= 1"."""
    base, constraints = _strip(annotation)
    origin, args = get_origin(base), get_args(base)
    if origin is Literal:
        text = "one of " + ", ".join(map(repr, args))
    elif origin is tuple:
        text = f"a list, each {describe(args[0])}"
    elif origin in (typing.Union, types.UnionType):
        text = " or ".join("null" if a is type(None) else describe(a) for a in args)
    else:
        text = {int: "an integer", float: "a finite number", bool: "true or false",
                str: "a string"}.get(base, getattr(base, "__name__", str(base)))
    bounds = [f"{symbol} {getattr(c, attr)}" for c in constraints
              for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if hasattr(c, attr)]
    bounds += [f"with at least {c.min_length} item(s)" for c in constraints if hasattr(c, "min_length")]
    return " ".join([text, " and ".join(bounds)]) if bounds else text


def _annotation_at(cls: type, loc: tuple):
    """The annotation a pydantic error location points to inside dataclass `cls` (None if unknown)."""
    annotation = cls
    for part in loc:
        base, _ = _strip(annotation)
        if dataclasses.is_dataclass(base):
            annotation = typing.get_type_hints(base, include_extras=True).get(part)
        elif get_origin(base) is tuple:
            annotation = get_args(base)[0]
        elif get_origin(base) is dict:
            annotation = get_args(base)[1]
        else:
            return None
        if annotation is None:
            return None
    return annotation


def _field_names(cls: type, loc: tuple) -> list[str]:
    base, _ = _strip(_annotation_at(cls, loc))
    return [f.name for f in dataclasses.fields(base)] if dataclasses.is_dataclass(base) else []


def _message(cls: type, error: dict, method: str | None) -> str:
    loc, kind = tuple(error["loc"]), error["type"]
    if kind == "unexpected_keyword_argument":
        allowed = _field_names(cls, loc[:-1])
        text = f"unknown {'option' if method else 'key'}; allowed keys: {', '.join(allowed) or 'none'}"
    elif kind == "missing":
        text = "missing: every key is required (the values live in params.yaml, not in code)"
    elif kind == "value_error" and "error" in error.get("ctx", {}):
        text = str(error["ctx"]["error"])
    else:
        annotation = _annotation_at(cls, loc)
        expected = describe(annotation) if annotation is not None else error["msg"]
        text = f"expected {expected}, got {error['input']!r}"
    return f"method {method!r}: {text}" if method else text


def _typed(cls: type, values: Any, place: Callable[[tuple], tuple], method: str | None = None):
    """(instance, []) or (None, [(key path, message)]); `place` maps a location inside `values`
    to its key path in the parameter files."""
    try:
        return _typed_adapter(cls).validate_python(values), []
    except ValidationError as error:
        return None, [(place(tuple(e["loc"])), _message(cls, e, method)) for e in error.errors()]


def _under(*prefix: str) -> Callable[[tuple], tuple]:
    return lambda loc: (*prefix, *loc)


def _block(raw: Mapping, name: str) -> Mapping:
    return raw["methods"][name] or {}


def registry_method(raw: Mapping, name: str) -> str:
    """The registry method block `name` uses: its `method`, else its key."""
    return _block(raw, name).get("method", name)


def method_train(raw: Mapping, name: str) -> dict:
    """Method `name`'s train settings as its runs use them: the shared `train` block with the
    block's own `train` keys on top. The one place they merge: the typed config and Snakemake's
    rules (workflow/rules/common.smk) both read it."""
    return deep_merge(raw["train"], _block(raw, name).get("train") or {})


def method_options(raw: Mapping, name: str) -> tuple[dict, dict]:
    """(inherited, own) options of block `name`; the block's options are own on top of inherited.

    A block whose key is not a registry name (`method: lst` under `lst_dynamic`) starts from
    the options of the block named after its registry method, when there is one, and
    overrides them key by key; otherwise it lists every option itself."""
    method = registry_method(raw, name)
    own = _block(raw, name).get("options") or {}
    inherited = {}
    if method != name and method in raw["methods"]:
        inherited = _block(raw, method).get("options") or {}
    return inherited, own


def _method_config(name: str, raw: dict) -> tuple[MethodConfig | None, list]:
    """One `methods` block typed: its key, registry method, merged train settings, options."""
    block, path = _block(raw, name), ("methods", name)
    errors: list[tuple[tuple, str]] = []
    if name in RESERVED_METHOD_KEYS:
        errors.append((path, f"method key {name!r} would write models/{name}/, where `cfqa pretrain` writes a "
                             f"backbone; use another key (reserved: {', '.join(RESERVED_METHOD_KEYS)})"))
    method = registry_method(raw, name)
    if method not in METHOD_OPTIONS:
        errors.append(((*path, "method") if "method" in block else path,
                       f"unknown method {method!r}; the registry has {', '.join(METHOD_OPTIONS)}"))
        return None, errors

    inherited, own_options = method_options(raw, name)

    def option_place(loc: tuple) -> tuple:
        owner = method if loc and loc[0] not in own_options and loc[0] in inherited else name
        return ("methods", owner, "options", *loc)

    options, option_errors = _typed(METHOD_OPTIONS[method], deep_merge(inherited, own_options), option_place, method)
    own_train = block.get("train") or {}
    train, train_errors = _typed(TrainConfig, method_train(raw, name),
                                 lambda loc: (*path, "train", *loc) if loc and loc[0] in own_train else ("train", *loc))
    errors += option_errors + train_errors
    if errors:
        return None, errors
    return MethodConfig(name=name, method=method, backbone=block.get("backbone", "base"),
                        train=train, options=options), []


def method_configs(raw: dict) -> tuple[dict[str, MethodConfig], list]:
    methods, errors = {}, []
    for name in raw["methods"]:
        methods[name], method_errors = _method_config(name, raw)
        errors += method_errors
    return methods, errors


def without_removed_methods(raw: dict) -> dict:
    """`raw` without the `methods` entries set to null: a later file (a profile) removes a
    method of an earlier one that way, after the files are merged."""
    methods = raw.get("methods")
    if not isinstance(methods, dict) or all(block is not None for block in methods.values()):
        return raw
    return {**raw, "methods": {name: block for name, block in methods.items() if block is not None}}


def family_errors(raw: dict) -> list[tuple[tuple, str]]:
    """What the base model's family rules out: methods that do not apply to it, and (for the
    embedded GPT-Neo) a vocabulary below byte-level BPE's minimum."""
    pretrain = raw["pretrain"]
    family = PRETRAIN_FAMILIES[pretrain["family"]]
    errors = []
    for name, block in raw["methods"].items():
        method = block.get("method", name)
        if method not in METHOD_OPTIONS:
            continue                      # reported by _method_config
        try:
            check_method_family(method, family)
        except UnsupportedFamily as error:
            errors.append((("methods", name), f"pretrain.family is {pretrain['family']}: {error}; remove the "
                                              f"method (`{name}: null` in a later params file)"))
    if (family is ModelFamily.CAUSAL and pretrain["hub_id"] is None
            and pretrain["vocab_size"] < BYTE_LEVEL_MIN_VOCABULARY):
        errors.append((("pretrain", "vocab_size"),
                       f"pretrain.family gpt_neo trains a byte-level BPE vocabulary: vocab_size must be >= "
                       f"{BYTE_LEVEL_MIN_VOCABULARY} (256 bytes + eos + pad), got {pretrain['vocab_size']}"))
    return errors


def from_dict(raw: dict, source: Source = "params") -> Config:
    """The typed configuration; ConfigError listing every problem, each with its file and key."""
    validate(raw, source)
    raw = without_removed_methods(raw)
    if not raw["methods"]:
        _raise([(("methods",), "every method is removed (null); keep at least one")], source)
    sections, errors = {}, family_errors(raw)
    for f in dataclasses.fields(Config):
        if f.name == "methods" or (f.name not in raw and f.default is not dataclasses.MISSING):
            continue
        # JSON Schema takes 1.0 for the integer 1 (a seed must be an int), NaN for a number.
        sections[f.name], section_errors = _typed(_config_field(f.name), raw[f.name], _under(f.name))
        errors += section_errors
    methods, method_errors = method_configs(raw)
    _raise(errors + method_errors, source)
    return Config(methods=methods, **sections)


def _file_setting(layers: list[tuple[str, dict]]) -> Callable[[tuple], str]:
    def file_setting(path: tuple) -> str:
        """The last file that sets the key (or its nearest parent): where to fix it."""
        for depth in range(len(path), 0, -1):
            for name, layer in reversed(layers):
                node = layer
                try:
                    for part in path[:depth]:
                        node = node[part]
                except (KeyError, IndexError, TypeError):
                    continue
                return name
        return " + ".join(name for name, _ in layers)
    return file_setting


def load(paths: Iterable[str | Path] = (DEFAULT_PARAMS,)) -> Config:
    paths = list(paths) or [DEFAULT_PARAMS]
    layers = [(str(p), read_params([p])) for p in paths]
    return from_dict(read_params(paths), source=_file_setting(layers))


def validate_config(raw: dict, paths: Iterable[str | Path] = ()) -> None:
    """Every check `load` makes, on an already merged mapping (Snakemake's `config`); raises
    ConfigError. `paths`, the files merged into `raw` in order, name the file to fix."""
    paths = list(paths)
    source: Source = _file_setting([(str(p), read_params([p])) for p in paths]) if paths else "params"
    from_dict(raw, source)


def registry_options(method: str, overrides: Mapping[str, Any] | None = None,
                     paths: Iterable[str | Path] = (PROJECT_ROOT / "params.yaml",)) -> MethodOptions:
    """Registry method `method`'s options from the block named after it in `paths`, with
    `overrides` on top, validated: how code outside the pipeline (tests, benchmarks) builds a
    method with the configured values."""
    if method not in METHOD_OPTIONS:
        raise ConfigError(f"unknown method {method!r}; the registry has {', '.join(METHOD_OPTIONS)}")
    paths = [str(p) for p in paths]
    configured = (read_params(paths).get("methods") or {}).get(method) or {}
    values = deep_merge(configured.get("options") or {}, dict(overrides or {}))
    options, errors = _typed(METHOD_OPTIONS[method], values, _under("methods", method, "options"), method)
    _raise(errors, " + ".join(paths) + (" + overrides" if overrides else ""))
    return options
