"""Method options are typed and checked when the configuration loads: an unknown key, a wrong
type, a bound or a non-finite number stops every command (and `snakemake -n`) at once with the
file, the method, the key and what was expected; params.yaml holds every option's value."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cfqa import cli
from cfqa.config import PROJECT_ROOT, ConfigError, from_dict, load, read_params, registry_options, validate_config
from cfqa.methods.registry import METHOD_NAMES
from cfqa.methods.options import METHOD_OPTIONS, LstOptions
from pipeline_support import tool_env

PARAMS = PROJECT_ROOT / "params.yaml"
PROFILE_PARAMS = sorted((PROJECT_ROOT / "workflow" / "profiles").glob("*/params.yaml"))
RAW = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))


def override(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "override.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(*paths: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load([PARAMS, *paths])
    return str(caught.value)


def test_params_yaml_lists_every_option_of_every_registry_method():
    for name in METHOD_NAMES:
        fields = [f.name for f in dataclasses.fields(METHOD_OPTIONS[name])]
        assert list(RAW["methods"][name]["options"]) == fields, name


@pytest.mark.parametrize("paths", [[]] + [[p] for p in PROFILE_PARAMS],
                         ids=["params.yaml"] + [p.parent.name for p in PROFILE_PARAMS])
def test_params_and_every_profile_load_typed_options(paths):
    cfg = load([PARAMS, *paths])
    for method in cfg.methods.values():
        assert type(method.options) is METHOD_OPTIONS[method.method]
    # A profile may aim LoRA elsewhere (another architecture's module names) or remove it.
    profile_lora = (read_params(paths).get("methods") or {}).get("lora", {})
    if profile_lora is not None and "target_modules" not in (profile_lora.get("options") or {}):
        assert cfg.methods["lora"].options.target_modules == ("q", "v")


def test_gpt_neo_profile_targets_gpt_neo_modules_and_drops_seq2seq_methods():
    cfg = load([PARAMS, PROJECT_ROOT / "workflow" / "profiles" / "gpt-neo-125m" / "params.yaml"])
    assert cfg.pretrain.family == "gpt_neo"
    assert list(cfg.methods) == ["last_layer", "lora", "prompt"]
    assert cfg.methods["lora"].options.target_modules == ("q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj")


def test_profile_overrides_reach_the_typed_options():
    cfg = load([PARAMS, PROJECT_ROOT / "workflow" / "profiles" / "disentqa-t5-large" / "params.yaml"])
    assert cfg.methods["prompt"].options.num_virtual_tokens == 100
    assert cfg.methods["prefix"].options.mlp_hidden_size == 512
    assert cfg.methods["prefix"].options.sites == ("encoder_self", "decoder_self", "decoder_cross")


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_unknown_option_names_file_method_key_and_allowed_keys(tmp_path, name):
    bad = override(tmp_path, f"methods: {{{name}: {{options: {{rank: 8}}}}}}\n")
    allowed = ", ".join(RAW["methods"][name]["options"]) or "none"
    assert (f"{bad}: methods.{name}.options.rank: method '{name}': unknown option; allowed keys: {allowed}"
            in load_error(bad))


@pytest.mark.parametrize("method, option, value, expected", [
    ("adapter", "reduction_factor", "true", "expected an integer >= 1, got True"),
    ("last_layer", "num_blocks", "1.0", "expected an integer >= 1, got 1.0"),
    ("prompt", "num_virtual_tokens", "0", "expected an integer >= 1, got 0"),
    ("lora", "r", "'8'", "expected an integer >= 1, got '8'"),
    ("lora", "dropout", "'0.1'", "expected a finite number >= 0 and < 1, got '0.1'"),
    ("lora", "dropout", "1.0", "expected a finite number >= 0 and < 1, got 1.0"),
    ("lst", "dropout", ".nan", "expected a finite number >= 0 and < 1, got nan"),
    ("lst", "fusion", "gated", "expected one of 'static', 'dynamic', 'attention', got 'gated'"),
    ("prefix", "reparameterize", "1", "expected true or false, got 1"),
    ("prefix_decoder", "mlp_hidden_size", "null", "expected an integer >= 1, got None"),
    ("ia3", "target_modules", "k", "expected a list, each a string with at least 1 item(s), got 'k'"),
    ("lora", "target_modules", "[q, q]", "items must be distinct; repeated: ['q']"),
])
def test_bad_option_value_names_what_was_expected(tmp_path, method, option, value, expected):
    bad = override(tmp_path, f"methods: {{{method}: {{options: {{{option}: {value}}}}}}}\n")
    assert f"{bad}: methods.{method}.options.{option}: method '{method}': {expected}" in load_error(bad)


def test_options_are_checked_together(tmp_path):
    bad = override(tmp_path, "methods: {ia3: {options: {feedforward_modules: [wi]}}}\n")
    assert (f"{bad}: methods.ia3.options: method 'ia3': feedforward_modules ['wi'] must also be in "
            "target_modules ['k', 'v', 'wo']") in load_error(bad)


@pytest.mark.parametrize("key", ["base", "base_lm"])
def test_method_key_may_not_shadow_a_backbone_directory(tmp_path, key):
    bad = override(tmp_path, f"methods: {{{key}: {{method: full, options: {{}}}}}}\n")
    assert f"{bad}: methods.{key}: method key '{key}' would write models/{key}/" in load_error(bad)


def test_method_key_must_be_an_identifier(tmp_path):
    bad = override(tmp_path, "methods: {Lora-2: {method: lora}}\n")
    assert "methods: expected a method key: a lower-case letter" in load_error(bad)


def test_unknown_registry_method_is_named(tmp_path):
    bad = override(tmp_path, "methods: {mine: {method: lorra}}\n")
    assert f"{bad}: methods.mine.method: unknown method 'lorra'; the registry has full, " in load_error(bad)


@pytest.mark.parametrize("text, key, expected", [
    ("train: {batch_size: 16.0}\n", "train.batch_size", "expected an integer >= 1, got 16.0"),
    ("train: {lr: .nan}\n", "train.lr", "expected a finite number > 0, got nan"),
    ("train: {weight_decay: .inf}\n", "train.weight_decay", "expected a finite number >= 0, got inf"),
    ("methods: {lora: {train: {lr: .inf}}}\n", "methods.lora.train.lr", "expected a finite number > 0, got inf"),
    ("methods: {lora: {train: {max_steps: 10.0}}}\n", "methods.lora.train.max_steps", "expected an integer >= 1, got 10.0"),
    ("pretrain: {steps: 150.0}\n", "pretrain.steps", "expected an integer >= 1, got 150.0"),
    ("data: {embedded: {seed: 0.0}}\n", "data.embedded.seed", "expected an integer >= 0 and <= 4294967295, got 0.0"),
])
def test_shared_numbers_are_integers_and_finite(tmp_path, text, key, expected):
    bad = override(tmp_path, text)
    assert f"{bad}: {key}: {expected}" in load_error(bad)


def test_block_under_another_key_inherits_its_methods_options(tmp_path):
    extra = override(tmp_path, "methods: {lst_dynamic: {method: lst, options: {fusion: dynamic}}}\n")
    cfg = load([PARAMS, extra])
    assert cfg.methods["lst_dynamic"].options == LstOptions(reduction_factor=8, fusion="dynamic", dropout=0.1, seed=None)
    assert cfg.methods["lst_dynamic"].backbone == "base"
    assert cfg.methods["lst"].options.fusion == "static"


def test_block_without_its_methods_block_lists_every_option():
    raw = read_params([PARAMS])
    del raw["methods"]["lst"]
    raw["methods"]["side"] = {"method": "lst", "options": {"fusion": "dynamic"}}
    with pytest.raises(ConfigError) as caught:
        from_dict(raw, "params.yaml")
    for option in ("reduction_factor", "dropout", "seed"):
        assert f"params.yaml: methods.side.options.{option}: method 'lst': missing" in str(caught.value)


def test_validate_config_names_the_override_file(tmp_path):
    bad = override(tmp_path, "methods: {lora: {options: {rank: 8}}}\n")
    validate_config(read_params([PARAMS]), [PARAMS])
    with pytest.raises(ConfigError, match=rf"{bad}: methods\.lora\.options\.rank: method 'lora': unknown option"):
        validate_config(read_params([PARAMS, bad]), [PARAMS, bad])


def test_registry_options_start_from_params_yaml():
    assert registry_options("lst") == LstOptions(reduction_factor=8, fusion="static", dropout=0.1, seed=None)
    assert registry_options("lst", {"seed": 3}).seed == 3
    with pytest.raises(ConfigError, match="unknown method 'lstm'"):
        registry_options("lstm")


def test_cli_exits_2_on_a_bad_option_before_any_stage_loads(tmp_path, monkeypatch):
    bad = override(tmp_path, "methods: {lora: {options: {rank: 8}}}\n")
    imported = []
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: imported.append(name))
    log = tmp_path / "train.log"
    code = cli.main(["--log-file", str(log), "train", "--params", str(PARAMS), "--params", str(bad),
                     "--method", "lora", "--seed", "0", "--variants", str(tmp_path / "variants"),
                     "--models", str(tmp_path / "models"), "--out", str(tmp_path / "models" / "lora" / "seed0"),
                     "--results", str(tmp_path / "results")])
    assert code == 2 and imported == []
    assert f"{bad}: methods.lora.options.rank: method 'lora': unknown option" in log.read_text(encoding="utf-8")
    assert not (tmp_path / "models").exists()


def copy_workflow(destination: Path) -> Path:
    """The files Snakemake parses, so a dry run writes its metadata outside the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copy(PROJECT_ROOT / "Snakefile", destination / "Snakefile")
    shutil.copy(PARAMS, destination / "params.yaml")
    shutil.copytree(PROJECT_ROOT / "workflow", destination / "workflow", ignore=ignore)
    return destination


def test_snakemake_dry_run_fails_on_a_bad_option_before_any_job(tmp_path):
    project = copy_workflow(tmp_path)
    bad = override(tmp_path, "methods: {lora: {options: {rank: 8}}}\n")
    result = subprocess.run(["snakemake", "-n", "--cores", "1", "--configfile", str(bad)], cwd=project,
                            env=tool_env(), capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "methods.lora.options.rank: method 'lora': unknown option; allowed keys: r, alpha, dropout, " \
           "target_modules" in output, output[-3000:]
    assert "Job stats" not in output and "rule " not in output
