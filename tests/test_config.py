"""The typed configuration: params.yaml loads and validates, errors name the file and key,
later files override key by key, method blocks override the shared train keys; and every
params key a stage declares (cfqa.dag) exists."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from cfqa import config as config_module
from cfqa.config import ConfigError, TrainConfig, deep_merge, load
from cfqa.dag import STAGE_PARAMS, param_slice, stage_param_keys
from cfqa.methods.registry import METHOD_NAMES
from cfqa.methods.options import LoraOptions

PARAMS = config_module.PROJECT_ROOT / "params.yaml"


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return yaml.safe_load(PARAMS.read_text(encoding="utf-8"))


def write_yaml(path, value) -> str:
    path.write_text(yaml.safe_dump(value), encoding="utf-8")
    return str(path)


def test_params_yaml_loads_into_typed_sections(raw_params):
    cfg = load([PARAMS])
    assert cfg.train == TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in raw_params["train"].items()})
    assert cfg.train.mixture == ("factual", "counterfactual", "empty", "random")
    assert cfg.data.embedded.test_fraction == raw_params["data"]["embedded"]["test_fraction"]
    assert cfg.data.nq.dev_urls == tuple(raw_params["data"]["nq"]["dev_urls"])
    assert cfg.pretrain.vocab_size == raw_params["pretrain"]["vocab_size"]
    assert list(cfg.methods) == list(raw_params["methods"])
    assert cfg.entities.group_of("GPE") == "LOCATION" and cfg.entities.group_of("WORK_OF_ART") is None
    assert cfg.entities.groups["NUMERIC"] == ("CARDINAL", "QUANTITY")
    assert cfg.report.notes == tuple(raw_params["report"]["notes"])
    assert cfg.seeds == tuple(raw_params["seeds"]) and len(cfg.seeds) >= 1


def test_a_run_takes_its_seed_from_the_seed_list_not_from_params(tmp_path):
    cfg = load([PARAMS, write_yaml(tmp_path / "seeds.yaml", {"seeds": [4, 0, 7]})])
    assert cfg.seeds == (4, 0, 7)
    # The unseeded template has no seed; every run names its own.
    assert cfg.train.seed is None and cfg.methods["lora"].train.seed is None
    run = cfg.method("lora", 7)
    assert run.train.seed == 7
    assert dataclasses.replace(run.train, seed=None) == cfg.methods["lora"].train
    assert run.options == cfg.methods["lora"].options and run.backbone == cfg.methods["lora"].backbone
    for bad in (-1, True, "1", 1.0):
        with pytest.raises(ConfigError, match=r"method 'lora': seed must be an integer >= 0"):
            cfg.method("lora", bad)


def test_every_method_block_names_a_registry_method():
    cfg = load([PARAMS])
    for name, method in cfg.methods.items():
        assert method.name == name and method.method in METHOD_NAMES
        assert method.backbone in ("base", "lm_adapted")
    assert cfg.method("prompt", 0).backbone == "lm_adapted"
    with pytest.raises(ConfigError, match="method 'nope' is not in params.yaml"):
        cfg.method("nope", 0)


def test_method_train_block_overrides_only_its_keys(raw_params):
    cfg = load([PARAMS])
    lora = cfg.methods["lora"].train
    assert lora.lr == raw_params["methods"]["lora"]["train"]["lr"] != cfg.train.lr
    assert dataclasses.replace(lora, lr=cfg.train.lr) == cfg.train
    assert cfg.methods["lora"].options == LoraOptions(r=8, alpha=16, dropout=0.0, target_modules=("q", "v"))
    assert cfg.methods["lora"].options_record() == raw_params["methods"]["lora"]["options"]


@pytest.mark.parametrize("override, key", [
    ({"train": {"lr": -1}}, "train.lr"),
    ({"train": {"optimizer": "sgd"}}, "train.optimizer"),
    ({"pretrain": {"d_model": "big"}}, "pretrain.d_model"),
    ({"methods": {"lora": {"train": {"batch_size": 0}}}}, "methods.lora.train.batch_size"),
    ({"train": {"mixture": ["factual", "imaginary"]}}, "train.mixture.1"),
    ({"data": {"embedded": {"test_fraction": 1.0}}}, "data.embedded.test_fraction"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"seeds": [0, -1]}, "seeds.1"),
    ({"seeds": [0, 1.0]}, "seeds.1"),
    ({"seeds": 3}, "seeds"),
    # A run's seed is one of `seeds`: neither the shared nor a method's train block sets one.
    ({"train": {"seed": 0}}, "train"),
    ({"methods": {"lora": {"train": {"seed": 1}}}}, "methods.lora.train"),
])
def test_bad_value_names_the_file_and_key(tmp_path, override, key):
    bad = write_yaml(tmp_path / "bad.yaml", override)
    with pytest.raises(ConfigError) as caught:
        load([PARAMS, bad])
    message = str(caught.value)
    assert f": {key}: " in message and "bad.yaml" in message


def test_unknown_key_is_an_error(tmp_path):
    bad = write_yaml(tmp_path / "typo.yaml", {"train": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError, match="train: .*'learning_rate' was unexpected"):
        load([PARAMS, bad])


def test_second_file_overrides_key_by_key(tmp_path, raw_params):
    override = write_yaml(tmp_path / "profile.yaml", {
        "train": {"max_steps": 7},
        "data": {"embedded": {"seed": 3}},
        "methods": {"lora": {"options": {"r": 2}}},
    })
    cfg = load([PARAMS, override])
    assert cfg.train.max_steps == 7 and cfg.train.batch_size == raw_params["train"]["batch_size"]
    assert cfg.data.embedded.seed == 3
    assert cfg.data.embedded.min_city_population == raw_params["data"]["embedded"]["min_city_population"]
    # The shared override reaches every method; a method's own train keys still win.
    assert cfg.method("full", 0).train.max_steps == 7
    assert cfg.method("lora", 0).train.max_steps == 7
    assert cfg.method("lora", 0).train.lr == raw_params["methods"]["lora"]["train"]["lr"]
    # Mappings merge; the other options of the block stay.
    assert cfg.method("lora", 0).options_record() == {**raw_params["methods"]["lora"]["options"], "r": 2}
    assert list(cfg.methods) == list(raw_params["methods"])


def test_lists_are_replaced_not_merged():
    merged = deep_merge({"a": {"b": [1, 2], "c": 1}}, {"a": {"b": [3]}})
    assert merged == {"a": {"b": [3], "c": 1}}


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: parameter file not found"):
        load([tmp_path / "missing.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load([PARAMS, broken])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping at the top level"):
        load([PARAMS, listing])


def test_every_stage_param_key_exists(raw_params):
    for stage in STAGE_PARAMS:
        for method in raw_params["methods"]:
            values = param_slice(raw_params, stage, method)
            assert list(values) == stage_param_keys(stage, method)
    assert param_slice(raw_params, "train", "lora") == {"train": raw_params["train"],
                                                        "methods.lora": raw_params["methods"]["lora"]}
    assert param_slice(raw_params, "report")["data.source"] == raw_params["data"]["source"]


def test_error_names_the_file_that_set_the_bad_value(tmp_path):
    from cfqa.config import ConfigError, load

    base = Path(__file__).resolve().parents[1] / "params.yaml"
    override = tmp_path / "override.yaml"
    override.write_text("train: {lr: -1}\n")
    with pytest.raises(ConfigError, match=r"override\.yaml: train\.lr"):
        load([base, override])
    harmless = tmp_path / "harmless.yaml"
    harmless.write_text("train: {max_steps: 3}\nevaluate: {batch_size: 0}\n")
    with pytest.raises(ConfigError) as error:
        load([base, harmless])
    assert "harmless.yaml: evaluate.batch_size" in str(error.value)
    assert "harmless.yaml: train" not in str(error.value)


def test_report_notes_state_no_numbers_the_pipeline_does_not_compute():
    """Measured numbers in the report come from the run's results, never from params text."""
    import glob

    root = config_module.PROJECT_ROOT
    for path in [root / "params.yaml", *map(Path, glob.glob(str(root / "workflow/profiles/*/params.yaml")))]:
        notes = (yaml.safe_load(path.read_text()).get("report") or {}).get("notes") or []
        for note in notes:
            assert not re.search(r"\d\s*%|\d+\.\d+", note), f"{path}: report note states a number: {note[:80]}"


@pytest.mark.parametrize("key", ["full;echo hi", "full $(touch pwned)", "full`id`", "../full", "a/b",
                                 "full\nrm", "full\n", "Full", "1full", "full-2", "", "x" * 65, "x" * 300])
def test_method_keys_are_safe_identifiers(tmp_path, key):
    """A method key becomes a path segment and a shell word in every engine's command: only
    lower-case identifiers of at most 64 characters pass, so none can carry shell syntax (a
    trailing newline included: Python's `$` matches before it), leave models/ or make a file
    name too long."""
    bad = write_yaml(tmp_path / "bad.yaml", {"methods": {key: {"method": "full"}}})
    with pytest.raises(ConfigError, match=r"bad\.yaml: methods: expected a (method )?key"):
        load([PARAMS, bad])
    assert "x" * 64 in load([PARAMS, write_yaml(tmp_path / "long.yaml", {"methods": {"x" * 64: {"method": "full"}}})]).methods


@pytest.mark.parametrize("override, expected", [
    ({"prepare": {"validation_fraction": float("nan")}}, "prepare.validation_fraction: expected a finite number"),
    ({"train": {"lr": 0}}, "train.lr: 0 is less than or equal to the minimum of 0"),
    ({"methods": {"lora": {"train": {"lr": 0.0}}}}, "methods.lora.train.lr: 0.0 is less than or equal"),
    ({"train": {"lr": float("-inf")}}, "train.lr: -inf is less than or equal to the minimum of 0"),
    ({"tune": {"lr_factors": [1.0, float("nan")]}}, "tune.lr_factors.1: expected a finite number"),
])
def test_values_that_would_train_nothing_or_diverge_are_rejected(tmp_path, override, expected):
    bad = write_yaml(tmp_path / "bad.yaml", override)
    with pytest.raises(ConfigError) as caught:
        config_module.validate_config(deep_merge(yaml.safe_load(PARAMS.read_text()), override), [PARAMS, bad])
    assert expected in str(caught.value)


def test_memory_knobs_name_the_values_and_the_method_block():
    train = load([PARAMS]).method("lora", 0).train
    text = train.memory_knobs("lora")
    assert text.startswith(f"train.batch_size is {train.batch_size}, train.grad_accum_steps "
                           f"{train.grad_accum_steps}, train.gradient_checkpointing "
                           f"{str(train.gradient_checkpointing).lower()}: lower train.batch_size")
    assert text.endswith("in methods.lora.train")


def test_a_null_method_entry_removes_the_method_after_merging(tmp_path, raw_params):
    removal = write_yaml(tmp_path / "drop.yaml", {"methods": {"lst": None, "prefix": None}})
    cfg = load([PARAMS, removal])
    assert list(cfg.methods) == [m for m in raw_params["methods"] if m not in ("lst", "prefix")]
    # Snakemake merges --configfile the same way (a null value stays): the same check passes.
    config_module.validate_config(deep_merge(raw_params, {"methods": {"lst": None}}), [PARAMS])
    everything = write_yaml(tmp_path / "none.yaml", {"methods": dict.fromkeys(raw_params["methods"])})
    with pytest.raises(ConfigError, match=r"methods: every method is removed \(null\); keep at least one"):
        load([PARAMS, everything])


def test_pretrain_family_is_required_and_one_of_t5_or_gpt_neo(tmp_path, raw_params):
    assert load([PARAMS]).pretrain.family == raw_params["pretrain"]["family"] == "t5"
    bad = write_yaml(tmp_path / "family.yaml", {"pretrain": {"family": "llama"}})
    with pytest.raises(ConfigError, match=r"family\.yaml: pretrain\.family: 'llama' is not one of \['t5', 'gpt_neo'\]"):
        load([PARAMS, bad])
    missing = {**raw_params, "pretrain": {k: v for k, v in raw_params["pretrain"].items() if k != "family"}}
    with pytest.raises(ConfigError, match=r"pretrain: 'family' is a required property"):
        config_module.from_dict(missing)


def test_a_gpt_neo_backbone_rejects_seq2seq_only_methods_on_their_key(tmp_path):
    causal = write_yaml(tmp_path / "causal.yaml", {"pretrain": {"family": "gpt_neo", "vocab_size": 300}})
    with pytest.raises(ConfigError) as caught:
        load([PARAMS, causal])
    lines = str(caught.value).splitlines()[1:]
    assert [line.split(": ")[1] for line in lines] == ["methods.prefix", "methods.lst"]
    assert lines[0].strip().startswith(f"{PARAMS}: methods.prefix: pretrain.family is gpt_neo: method 'prefix' "
                                       "cannot be applied to a causal model")
    dropped = write_yaml(tmp_path / "dropped.yaml", {"methods": {"prefix": None, "lst": None}})
    assert load([PARAMS, causal, dropped]).pretrain.family == "gpt_neo"


def test_an_embedded_gpt_neo_needs_a_byte_level_vocabulary(tmp_path):
    small = write_yaml(tmp_path / "small.yaml", {"pretrain": {"family": "gpt_neo", "vocab_size": 257},
                                                 "methods": {"prefix": None, "lst": None}})
    with pytest.raises(ConfigError, match=r"small\.yaml: pretrain\.vocab_size: .*must be >= 258 .*got 257"):
        load([PARAMS, small])
