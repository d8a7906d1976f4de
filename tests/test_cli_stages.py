"""Each stage's command is declared once, in the stage table (cfqa.dag.table): the CLI's
subcommands, options, help and path roles are built from it, and every command the engines run
is one the CLI parses with exactly the options it declares. (Snakemake's commands are checked
on its dry run in tests/test_dag_parity.py.)"""
from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import types
from pathlib import Path

import pytest
import yaml

from cfqa import cli
from cfqa.config import PROJECT_ROOT
from cfqa.dag import STAGES, Stage
from cfqa.dag import stage as dag_stage
from cfqa.dag.dvc_yaml import render

# The CLI's own options, before the stage's name, and the one every stage takes.
GLOBAL_FLAGS = {"--help", "--version", "--log-level", "--log-file", "--cache"}
PARAMS_FLAG = "--params"
# A value for every DVC placeholder of a dimension (${key} of a foreach, ${item.x} of a matrix).
PLACEHOLDER = re.compile(r"\$\{(?:key|item\.(\w+))\}")
VALUES = {"method": "lora", "seed": "1"}


def stage_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def declared_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")} - {"--help"}


def assert_parser_takes_exactly(cmd: str) -> argparse.Namespace:
    """`cmd` (a `cfqa ...` command line an engine runs) parses, and passes every option its
    stage's parser declares, each once: nothing the CLI does not know, nothing it takes left out."""
    argv = shlex.split(cmd)
    assert argv[0] == "cfqa", cmd
    args = cli.build_parser().parse_args(argv[1:])          # an unknown or missing option exits 2
    name = args.command
    after = argv[argv.index(name) + 1:]
    passed = [token for token in after if token.startswith("--")]
    options = [flag for flag in passed if flag != PARAMS_FLAG]      # --params may repeat (overrides)
    assert len(options) == len(set(options)), f"{name}: an option passed twice in {cmd}"
    assert set(passed) == declared_flags(stage_parsers()[name]), f"{name}: {cmd}"
    return args


def dvc_commands(params: dict) -> dict[str, str]:
    """Each dvc.yaml stage's cmd, its dimension placeholders given values."""
    commands = {}
    for name, body in yaml.safe_load(render(params))["stages"].items():
        body = body.get("do", body)
        spec = dag_stage(name)
        dims = [d.name for d in spec.dims]
        commands[name] = PLACEHOLDER.sub(lambda m: VALUES[m.group(1) or dims[0]], body["cmd"])
    return commands


def test_every_dvc_command_passes_exactly_the_options_the_cli_declares():
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    commands = dvc_commands(params)
    assert list(commands) == [spec.name for spec in STAGES]
    for name, cmd in commands.items():
        args = assert_parser_takes_exactly(cmd)
        spec = dag_stage(name)
        for dim in spec.dims:
            assert getattr(args, dim.name) == dim.type(VALUES[dim.name]), (name, dim.name)
        # Each option holds the path of the table's input, output or folder it names.
        paths = {**spec.named_paths(VALUES), **{k: v.format(**VALUES) for k, v in spec.dirs.items()}}
        for option in spec.options:
            assert getattr(args, option.dest) == Path(paths[option.key]), (name, option.flag)
    assert " --seed 1 " in commands["evaluate"] and "--model models/lora/seed1 " in commands["evaluate"]


def test_the_cli_declares_no_stage_of_its_own():
    """The table is the only list: the CLI's subcommands are its stages in its order, and cli.py
    names no stage option and holds no per-stage collection."""
    assert list(stage_parsers()) == [spec.name for spec in STAGES]
    for spec in STAGES:
        parser = stage_parsers()[spec.name]
        assert parser.description == spec.description
        assert declared_flags(parser) == {PARAMS_FLAG, *(f"--{d.name}" for d in spec.dims),
                                          *(f"--{o.flag}" for o in spec.options)}
    source = Path(cli.__file__).read_text(encoding="utf-8")
    strings = [node.value for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    flags = {flag for text in strings for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", text)}
    assert flags <= GLOBAL_FLAGS | {PARAMS_FLAG}, sorted(flags - GLOBAL_FLAGS)
    # Stage names as literals: only `validate` (it runs inside the CLI) and `evaluate` (its
    # out-of-memory advice names evaluate's own knobs).
    assert {text for text in strings if text in {spec.name for spec in STAGES}} <= {"validate", "evaluate"}
    names = {spec.name for spec in STAGES}
    for attribute, value in vars(cli).items():
        if isinstance(value, (dict, list, tuple, set, frozenset)) and not attribute.startswith("__"):
            if value is cli.STAGES or value is cli.STAGE_BY_NAME:
                continue
            assert not names & {str(item) for item in value}, f"cli.{attribute} lists stages"


def producer_output(path: str):
    """The table's Output that writes `path` (None: written by no stage, e.g. params.yaml)."""
    for spec in STAGES:
        for output in spec.outputs.values():
            if output.path == path:
                return output
    return None


@pytest.mark.parametrize("spec", STAGES, ids=lambda s: s.name)
def test_each_option_names_a_path_of_its_stage_in_a_role_that_fits(spec: Stage):
    """An output option names an output or a folder; an input option an input (a folder where
    the stage that writes it writes a folder) or a folder the stage reads."""
    assert len({o.flag for o in spec.options}) == len(spec.options), spec.name
    for option in spec.options:
        if option.key in spec.outputs:
            assert option.role == "out", (spec.name, option.flag)
        elif option.key in spec.inputs:
            written = producer_output(spec.inputs[option.key])
            assert written is not None, (spec.name, option.flag)
            assert option.role == ("dir" if written.directory else "file"), (spec.name, option.flag)
        else:
            assert option.key in spec.dirs, (spec.name, option.flag, "names no path of the stage")
            assert option.role in ("dir", "out", "dir+out"), (spec.name, option.flag)


def test_the_stage_gets_its_dimensions_and_paths_not_an_ordering_one(tmp_path, monkeypatch):
    """`--fetched` only orders download after fetch: checked as an input, never passed to the
    stage; a stage that reads the cache gets it; only the stage the table declares online
    (fetch) runs with the hub online."""
    received, imported = {}, []

    def run(cfg, **kwargs):
        received.update(kwargs, offline=os.environ.get("HF_HUB_OFFLINE"))

    def import_module(name):
        imported.append(name)
        return types.SimpleNamespace(run=run)

    monkeypatch.setattr(cli.importlib, "import_module", import_module)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fetched = tmp_path / "fetched.json"
    params = PROJECT_ROOT / "params.yaml"
    assert cli.main(["--cache", str(tmp_path / "cache"), "fetch", "--params", str(params), "--out", str(fetched)]) == 0
    assert received == {"out": fetched, "cache": tmp_path / "cache", "offline": None}
    received.clear()
    fetched.write_text("{}")
    code = cli.main(["--cache", str(tmp_path / "cache"), "download", "--params", str(params),
                     "--out", str(tmp_path / "raw"), "--fetched", str(fetched)])
    assert code == 0 and received == {"out": tmp_path / "raw", "cache": tmp_path / "cache", "offline": "1"}
    assert imported == ["cfqa.stages.fetch", "cfqa.stages.download"]
    received.clear()
    (tmp_path / "variants").mkdir()
    (tmp_path / "models").mkdir()
    code = cli.main(["tune", "--params", str(params), "--method", "lora", "--variants", str(tmp_path / "variants"),
                     "--models", str(tmp_path / "models"), "--out", str(tmp_path / "lr.json")])
    assert code == 0 and received == {"method": "lora", "variants": tmp_path / "variants",
                                      "models": tmp_path / "models", "out": tmp_path / "lr.json", "offline": "1"}
