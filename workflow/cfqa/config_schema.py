"""The JSON schema of params.yaml, generated from the typed configuration (cfqa.config) and
the registry's options classes (cfqa.methods.options) by pydantic.

    python -m cfqa.config_schema --write     # after adding or changing a key or a method
    python -m cfqa.config_schema --check     # exit 1 when the committed file is stale

The file, workflow/schemas/params.schema.yaml, stays on disk because Snakemake's `validate()`
reads a schema file: the Snakefile validates its `config` with it, which also fills in the
defaults (`run_root`, `report.compare_runs`, `report.primary_endpoint`) that the rules read
from `config`; cfqa.config checks the same file first, so both engines and the CLI agree.

pydantic writes the dataclasses as they are; three things of the file's shape are added
here, because they are no single dataclass: a `methods` block (MethodBlock) lists no key as
required, its `train` keys are TrainConfig's, all optional, and its `options` are the
options class of the registry method it names (`method`, else its key), all optional too:
a block under another key inherits the rest from the block named after the method.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import typing
from typing import Annotated, Any

import yaml
from pydantic import Field, TypeAdapter, with_config

from cfqa.io.atomic_io import atomic_open
from cfqa.config import SCHEMA_PATH, Config, MethodBlock, MethodKey, TrainConfig
from cfqa.methods.options import METHOD_OPTIONS, TYPED

HEADER = ("# GENERATED from the dataclasses of workflow/cfqa/config.py and the options classes of\n"
          "# workflow/cfqa/methods/options.py: do not edit. After changing them run\n"
          "#   python -m cfqa.config_schema --write\n")
DESCRIPTION = ("cfqa parameters (params.yaml). Snakemake validate() and the cfqa CLI check the same schema; "
               "cfqa.config then checks what JSON Schema cannot (ints that are not 16.0, finite numbers, "
               "complete method options).")
DRAFT = "https://json-schema.org/draft/2020-12/schema"
_BLOCK, _TRAIN_KEYS = "MethodBlock", "TrainKeys"


def _params_file() -> type:
    """Config as params.yaml writes it: `methods` maps method keys to blocks (null removes a
    method an earlier params file lists), at least one."""
    hints = typing.get_type_hints(Config, include_extras=True)
    hints["methods"] = Annotated[dict[MethodKey, MethodBlock | None], Field(min_length=1)]
    fields = [(f.name, hints[f.name], dataclasses.field(default=f.default)) if f.default is not dataclasses.MISSING
              else (f.name, hints[f.name]) for f in dataclasses.fields(Config)]
    return with_config(TYPED)(dataclasses.make_dataclass("ParamsFile", fields, frozen=True))


def _tidy(node: Any, in_properties: bool = False) -> Any:
    """Without the title pydantic gives every property (its own name: noise in a file people
    read), descriptions on one line (docstrings wrap), and each key pattern pydantic writes as
    `patternProperties` (where a key that does not match would pass unchecked) as
    `propertyNames`, so such a key is an error as it is in the typed pass."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: " ".join(value.split()) if key == "description" and not in_properties else
            _tidy(value, key == "properties" and not in_properties)
            for key, value in node.items() if in_properties or key != "title"}
    patterns = node.get("patternProperties")
    if not in_properties and isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in node:
        (pattern, values), = node.pop("patternProperties").items()
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
        node["additionalProperties"] = values
    return node


def _nullable(node: Any) -> Any:
    """`anyOf: [{type: T, ...}, {type: null}]` as `type: [T, null]`: one schema, so that an error
    is the failing keyword's (with the description it quotes), not "not valid under any"."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        other = next(option for option in options if option != {"type": "null"})
        if isinstance(other.get("type"), str):
            node.pop("anyOf")
            node = {**other, **node, "type": [other["type"], "null"]}
    return node


def _options_def(cls: type) -> dict:
    """A method's options as a block may write them: the class's keys and types, none required."""
    schema = _nullable(_tidy(TypeAdapter(cls).json_schema()))
    schema.pop("required", None)
    return schema


def _method_blocks(schema: dict) -> dict:
    """The `methods` blocks typed by the typed train keys and each registry method's options."""
    defs = schema["$defs"]
    train_keys = copy.deepcopy(defs[TrainConfig.__name__])
    train_keys.pop("required")
    train_keys["description"] = "keys of the shared `train` block this method overrides (none required)"
    defs[_TRAIN_KEYS] = train_keys
    block = defs.pop(_BLOCK)
    block.pop("required")
    block["type"] = ["object", "null"]
    block["properties"]["train"] = {"$ref": f"#/$defs/{_TRAIN_KEYS}"}
    block["allOf"] = [{"if": {"required": ["method"], "properties": {"method": {"const": name}}},
                       "then": {"properties": {"options": {"$ref": f"#/$defs/{_options_name(name)}"}}}}
                      for name in METHOD_OPTIONS]
    defs[_BLOCK] = block
    for name, cls in METHOD_OPTIONS.items():
        defs[_options_name(name)] = _options_def(cls)
    methods = schema["properties"]["methods"]
    methods["additionalProperties"] = {"$ref": f"#/$defs/{_BLOCK}"}
    # A block under a registry name without `method` uses that method.
    methods["properties"] = {
        name: {"allOf": [{"$ref": f"#/$defs/{_BLOCK}"},
                         {"if": {"type": "object", "not": {"required": ["method"]}},
                          "then": {"properties": {"options": {"$ref": f"#/$defs/{_options_name(name)}"}}}}]}
        for name in METHOD_OPTIONS}
    return schema


def _options_name(method: str) -> str:
    """The schema's $defs entry of a method's options: its class name."""
    return METHOD_OPTIONS[method].__name__


def params_schema() -> dict:
    """The JSON schema of params.yaml (draft 2020-12), from the typed configuration."""
    generated = TypeAdapter(_params_file()).json_schema(ref_template="#/$defs/{model}")
    schema = _method_blocks(_nullable(_tidy(generated)))
    schema.pop("description", None)
    defs = schema.pop("$defs")
    return {"$schema": DRAFT, "description": DESCRIPTION, **schema,
            "$defs": {name: defs[name] for name in sorted(defs)}}


def render() -> str:
    return HEADER + yaml.safe_dump(params_schema(), sort_keys=False, allow_unicode=True, width=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfqa.config_schema", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"write {SCHEMA_PATH}")
    action.add_argument("--check", action="store_true", help="exit 1 when the committed schema is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.is_file() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is stale: run python -m cfqa.config_schema --write", file=sys.stderr)
            return 1
        return 0
    with atomic_open(SCHEMA_PATH, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {SCHEMA_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
