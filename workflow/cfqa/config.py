"""The one typed configuration, built from params.yaml (plus optional override files).

Every default lives in params.yaml; this module only types, merges and validates. Files
given later override earlier ones key by key (a profile's params.yaml on top of the default).
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import jsonschema
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = PROJECT_ROOT / "workflow" / "schemas" / "params.schema.yaml"
DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """params.yaml does not match the schema; the message names the file and the key."""


@dataclass(frozen=True)
class EmbeddedWorldConfig:
    seed: int
    min_city_population: int
    max_cities_per_country: int
    min_subjects_per_answer: int
    test_fraction: float


@dataclass(frozen=True)
class NQSourceConfig:
    train_url: str
    dev_urls: tuple[str, ...]


@dataclass(frozen=True)
class HuggingFaceSourceConfig:
    dataset_id: str


@dataclass(frozen=True)
class DataConfig:
    source: str
    embedded: EmbeddedWorldConfig
    nq: NQSourceConfig
    huggingface: HuggingFaceSourceConfig


@dataclass(frozen=True)
class PrepareConfig:
    seed: int
    validation_fraction: float
    drop_table_and_list_contexts: bool
    max_bad_records: int


@dataclass(frozen=True)
class EntitiesConfig:
    ner: str
    groups: dict[str, tuple[str, ...]]

    def group_of(self, label: str | None) -> str | None:
        """The Longpre answer-type group of a spaCy label, or None if it is in no group."""
        for group, labels in self.groups.items():
            if label in labels:
                return group
        return None


@dataclass(frozen=True)
class CounterfactualConfig:
    seed: int
    policy: str
    substitute_within: str
    seen_size: int
    train_counterfactuals_per_question: int


@dataclass(frozen=True)
class PretrainConfig:
    hub_id: str | None
    lm_adapted_hub_id: str | None
    seed: int
    threads: int
    vocab_size: int
    d_model: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    d_ff: int
    max_length: int
    batch_size: int
    steps: int
    lr: float
    noise_density: float
    mean_noise_span_length: float
    lm_adapt_steps: int


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    threads: int
    max_steps: int
    batch_size: int
    grad_accum_steps: int
    optimizer: str
    lr: float
    weight_decay: float
    warmup_steps: int
    clip_norm: float
    bf16: bool
    gradient_checkpointing: bool
    eval_every: int
    early_stopping_patience: int
    max_input_length: int
    max_target_length: int
    mixture: tuple[str, ...]
    target_format: str


@dataclass(frozen=True)
class MethodConfig:
    """One entry of params.yaml `methods`: a registry method, its backbone, its settings."""

    name: str                 # the run's name (the key in params.yaml, the {method} wildcard)
    method: str               # the registry entry it uses
    backbone: str             # base | lm_adapted
    train: TrainConfig        # shared `train` defaults overridden by this block's `train`
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int
    max_new_tokens: int
    num_beams: int
    threads: int


@dataclass(frozen=True)
class TrackingConfig:
    uri: str
    experiment: str


@dataclass(frozen=True)
class ReportConfig:
    notes: tuple[str, ...]     # the report's "Limitations" bullets


@dataclass(frozen=True)
class Config:
    data: DataConfig
    prepare: PrepareConfig
    entities: EntitiesConfig
    counterfactuals: CounterfactualConfig
    pretrain: PretrainConfig
    train: TrainConfig
    methods: dict[str, MethodConfig]
    evaluate: EvaluateConfig
    tracking: TrackingConfig
    report: ReportConfig
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def method(self, name: str) -> MethodConfig:
        if name not in self.methods:
            raise ConfigError(f"method {name!r} is not in params.yaml `methods` ({sorted(self.methods)})")
        return self.methods[name]


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


def schema_errors(raw: dict) -> list[tuple[tuple, str]]:
    """(key path, message) for every schema violation."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    return [(tuple(e.absolute_path), e.message) for e in errors]


def validate(raw: dict, source: str | Callable[[tuple], str] = "params") -> None:
    """Raises ConfigError listing every violation with its dotted key; `source` names the file
    (or, given a function, the file that set that key)."""
    errors = schema_errors(raw)
    if errors:
        where = source if callable(source) else (lambda _path: source)
        lines = [f"{where(path)}: {'.'.join(map(str, path)) or '<top>'}: {message}" for path, message in errors]
        raise ConfigError("invalid parameters:\n  " + "\n  ".join(lines))


def read_params(paths: Iterable[str | Path]) -> dict:
    raw: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: parameter file not found")
        with open(path, encoding="utf-8") as handle:
            try:
                content = yaml.safe_load(handle) or {}
            except yaml.YAMLError as error:
                raise ConfigError(f"{path}: not valid YAML: {error}") from error
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw = deep_merge(raw, content)
    return raw


def _build(cls, values: dict):
    """A frozen dataclass from a validated mapping; nested dataclasses and tuples by annotation."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, hint = values[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def method_configs(raw: dict) -> dict[str, MethodConfig]:
    methods = {}
    for name, block in raw["methods"].items():
        train_values = deep_merge(raw["train"], block.get("train") or {})
        methods[name] = MethodConfig(
            name=name,
            method=block.get("method", name),
            backbone=block.get("backbone", "base"),
            train=_build(TrainConfig, train_values),
            options=copy.deepcopy(block.get("options") or {}),
        )
    return methods


def from_dict(raw: dict, source: str | Callable[[tuple], str] = "params") -> Config:
    validate(raw, source)
    return Config(
        data=_build(DataConfig, raw["data"]),
        prepare=_build(PrepareConfig, raw["prepare"]),
        entities=EntitiesConfig(
            ner=raw["entities"]["ner"],
            groups={g: tuple(labels) for g, labels in raw["entities"]["groups"].items()},
        ),
        counterfactuals=_build(CounterfactualConfig, raw["counterfactuals"]),
        pretrain=_build(PretrainConfig, raw["pretrain"]),
        train=_build(TrainConfig, raw["train"]),
        methods=method_configs(raw),
        evaluate=_build(EvaluateConfig, raw["evaluate"]),
        tracking=_build(TrackingConfig, raw["tracking"]),
        report=_build(ReportConfig, raw["report"]),
        raw=raw,
    )


def load(paths: Iterable[str | Path] = (DEFAULT_PARAMS,)) -> Config:
    paths = list(paths) or [DEFAULT_PARAMS]
    layers = [(str(p), read_params([p])) for p in paths]

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

    return from_dict(read_params(paths), source=file_setting)
