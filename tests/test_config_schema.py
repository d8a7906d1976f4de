"""The JSON schema is generated from the typed configuration: the committed file is the generated
one, Snakemake's `validate()` checks with it what the hand-written schema checked (ranges, enums,
names, unknown and missing keys, each method's options) and fills in the typed defaults, and a
new method's options class reaches the schema with no edit to it."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Annotated

import jsonschema
import pytest
import yaml
from pydantic import Field, StrictInt, with_config
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate as snakemake_validate

from cfqa import config_schema
from cfqa.config import (DEFAULT_RUN_ROOT, PROJECT_ROOT, SCHEMA_PATH, TrainConfig, deep_merge, load, method_train,
                         read_params, run_root)
from cfqa.methods.options import METHOD_OPTIONS, TYPED

PARAMS = PROJECT_ROOT / "params.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PARAMS.read_text(encoding="utf-8"))


def test_the_committed_schema_is_the_one_the_typed_config_generates():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == config_schema.render(), \
        "stale: run python -m cfqa.config_schema --write"
    assert config_schema.main(["--check"]) == 0


def test_check_reports_a_stale_schema_and_write_regenerates_it(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "params.schema.yaml"
    stale.write_text(SCHEMA_PATH.read_text(encoding="utf-8").replace("minimum: 8", "minimum: 9"), encoding="utf-8")
    monkeypatch.setattr(config_schema, "SCHEMA_PATH", stale)
    assert config_schema.main(["--check"]) == 1
    assert "params.schema.yaml is stale: run python -m cfqa.config_schema --write" in capsys.readouterr().err
    assert config_schema.main(["--write"]) == 0 and config_schema.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == SCHEMA_PATH.read_text(encoding="utf-8")


def violations(params: dict, schema: dict | None = None) -> list[tuple[str, str]]:
    """(dotted key path, failing keyword) for each error the committed schema finds."""
    validator = jsonschema.Draft202012Validator(schema or yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8")))
    return sorted((".".join(map(str, e.absolute_path)), e.validator) for e in validator.iter_errors(params))


@pytest.mark.parametrize("override, path, keyword", [
    ({"train": {"max_steps": 0}}, "train.max_steps", "minimum"),
    ({"train": {"lr": 0}}, "train.lr", "exclusiveMinimum"),
    ({"train": {"optimizer": "sgd"}}, "train.optimizer", "enum"),
    ({"train": {"mixture": ["factual", "factual"]}}, "train.mixture", "uniqueItems"),
    ({"train": {"mixture": []}}, "train.mixture", "minItems"),
    ({"train": {"seed": 0}}, "train", "additionalProperties"),
    ({"methods": {"lora": {"train": {"batch_size": 0}}}}, "methods.lora.train.batch_size", "minimum"),
    ({"methods": {"lora": {"train": {"seed": 1}}}}, "methods.lora.train", "additionalProperties"),
    ({"methods": {"lora": {"backbone": "huge"}}}, "methods.lora.backbone", "enum"),
    ({"methods": {"lora": {"colour": 1}}}, "methods.lora", "additionalProperties"),
    ({"methods": {"Lora": {"method": "lora"}}}, "methods", "pattern"),
    ({"seeds": [0, 0]}, "seeds", "uniqueItems"),
    ({"seeds": [2 ** 32]}, "seeds.0", "maximum"),
    ({"data": {"embedded": {"test_fraction": 1}}}, "data.embedded.test_fraction", "exclusiveMaximum"),
    ({"data": {"nq": {"dev_urls": []}}}, "data.nq.dev_urls", "minItems"),
    ({"data": {"nq": {"sha256": {"x.gz": "abc"}}}}, "data.nq.sha256.x.gz", "pattern"),
    ({"tracking": {"experiment": " cfqa"}}, "tracking.experiment", "pattern"),
    ({"pretrain": {"hub_id": "t5\n"}}, "pretrain.hub_id", "pattern"),
    ({"pretrain": {"vocab_size": 49}}, "pretrain.vocab_size", "minimum"),
    ({"tune": {"rungs": [0.5, 1.5]}}, "tune.rungs.1", "maximum"),
    ({"hub": {"models": {"t5": {"revision": "main", "sha256": {"model.safetensors": None}}}}},
     "hub.models.t5.revision", "pattern"),
    ({"hub": {"models": {"t5": {"revision": None, "sha256": {"model.pt": None}}}}}, "hub.models.t5.sha256", "pattern"),
    ({"report": {"colour": "red"}}, "report", "additionalProperties"),
    ({"report": {"primary_endpoint": {"metric": "f1"}}}, "report.primary_endpoint.metric", "enum"),
    ({"report": {"compare_runs": ["/abs"]}}, "report.compare_runs.0", "pattern"),
    ({"run_root": "results/x"}, "run_root", "not"),
    ({"run_root": "../up"}, "run_root", "pattern"),
    ({"scale": "huge"}, "scale", "enum"),
    # Each method's options, from its class: by key, and by `method` under another key.
    ({"methods": {"lora": {"options": {"r": 0}}}}, "methods.lora.options.r", "minimum"),
    ({"methods": {"lora": {"options": {"rank": 8}}}}, "methods.lora.options", "additionalProperties"),
    ({"methods": {"full": {"options": {"r": 8}}}}, "methods.full.options", "additionalProperties"),
    ({"methods": {"side": {"method": "lst", "options": {"fusion": "gated"}}}}, "methods.side.options.fusion", "enum"),
    ({"methods": {"side": {"method": "lora", "options": {"dropout": 1.0}}}}, "methods.side.options.dropout",
     "exclusiveMaximum"),
])
def test_the_schema_checks_ranges_enums_names_and_unknown_keys(raw, override, path, keyword):
    assert violations(raw) == []
    assert violations(deep_merge(raw, override)) == [(path, keyword)]


def test_the_schema_requires_every_key_without_a_typed_default(raw):
    for section, key in [("train", "lr"), ("pretrain", "family"), ("report", "notes"), (None, "scale")]:
        params = copy.deepcopy(raw)
        del (params[section] if section else params)[key]
        assert violations(params) == [(section or "", "required")]
    assert violations({**raw, "methods": {}}) == [("methods", "minProperties")]
    # A method block lists what it overrides; a block under another key inherits the options.
    assert violations(deep_merge(raw, {"methods": {"side": {"method": "lst", "options": {"fusion": "static"}}}})) == []


def test_snakemake_validate_accepts_the_params_and_fills_in_the_typed_defaults(raw):
    params = copy.deepcopy(raw)
    params.pop("run_root", None)
    snakemake_validate(params, str(SCHEMA_PATH))
    cfg = load([PARAMS])
    assert params["run_root"] == cfg.run_root == DEFAULT_RUN_ROOT == "."
    assert params["report"]["compare_runs"] == list(cfg.report.compare_runs) == []
    assert params["report"]["primary_endpoint"] == dataclasses.asdict(cfg.report.primary_endpoint)
    # Nothing is filled into a method block: its runs merge the shared train keys (method_train).
    assert params["methods"] == raw["methods"]
    with pytest.raises(WorkflowError):
        snakemake_validate(deep_merge(raw, {"train": {"max_steps": 0}}), str(SCHEMA_PATH))


def test_run_root_is_typed_and_every_profile_reads_the_same_root_both_ways(tmp_path):
    assert load([PARAMS]).run_root == run_root(read_params([PARAMS])) == "."
    for profile in sorted((PROJECT_ROOT / "workflow" / "profiles").glob("*/params.yaml")):
        merged = read_params([PARAMS, profile])
        assert load([PARAMS, profile]).run_root == run_root(merged) == merged["run_root"] != "."
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_root: logs/x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml: run_root: 'logs/x' is ruled out here"):
        load([PARAMS, bad])


def test_method_train_is_the_merge_the_typed_config_uses(raw):
    cfg = load([PARAMS])
    for name in raw["methods"]:
        merged = method_train(raw, name)
        assert TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}) \
            == cfg.methods[name].train
    assert method_train(raw, "lora")["lr"] == raw["methods"]["lora"]["train"]["lr"] != raw["train"]["lr"]
    assert method_train(raw, "lora")["threads"] == raw["train"]["threads"]


def test_a_new_method_reaches_the_schema_through_its_registry_entry(monkeypatch, raw):
    @with_config(TYPED)
    @dataclass(frozen=True)
    class WidgetOptions:
        width: Annotated[StrictInt, Field(ge=2)]

    monkeypatch.setitem(METHOD_OPTIONS, "widget", WidgetOptions)
    schema = config_schema.params_schema()
    assert schema["$defs"]["WidgetOptions"]["properties"]["width"] == {"minimum": 2, "type": "integer"}
    good = deep_merge(raw, {"methods": {"widget": {"options": {"width": 2}}}})
    assert violations(good, schema) == []
    assert violations(deep_merge(good, {"methods": {"widget": {"options": {"width": 1}}}}), schema) == \
        [("methods.widget.options.width", "minimum")]
    assert violations(deep_merge(good, {"methods": {"wide": {"method": "widget", "options": {"depth": 3}}}}), schema) == \
        [("methods.wide.options", "additionalProperties")]


def test_the_train_keys_are_the_fields_of_train_config():
    """A new train key is a TrainConfig field: the shared block requires it, a method block may set it."""
    defs = config_schema.params_schema()["$defs"]
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed"]
    assert defs["TrainConfig"]["required"] == list(defs["TrainKeys"]["properties"]) == fields
    assert "required" not in defs["TrainKeys"] and "seed" not in defs["TrainConfig"]["properties"]
