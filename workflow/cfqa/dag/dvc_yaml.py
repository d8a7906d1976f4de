"""dvc.yaml rendered from the stage table: per-dimension stages as `foreach` (one dimension)
or `matrix` (several: method x seed) over params.yaml, so dvc.yaml names no method or seed
except where a stage gathers over all of them (the report's deps, listed from params.yaml at
generation time)."""
from __future__ import annotations

import itertools

import yaml

from cfqa.dag.code import code_paths
from cfqa.dag.table import (RUN_DIMS, STAGE_BY_NAME, STAGES, TRAINING_CURVE_PLOT, Stage, command, compared_summaries,
                            fill, run_root)

PARAMS_ARGS = "--params params.yaml"
HEADER = """\
# Generated from the stage table in workflow/cfqa/dag/table.py: do not edit by hand.
# Regenerate with `python -m cfqa.dag --write dvc.yaml` after changing the table or the
# method or seed list in params.yaml (tests/test_dag_parity.py checks this file is current).
"""


def dvc_wildcards(spec: Stage) -> dict[str, str]:
    if len(spec.dims) == 1:
        return {spec.dims[0].name: "${key}"}
    return {dim.name: f"${{item.{dim.name}}}" for dim in spec.dims}


def expanded_inputs(spec: Stage, wildcards: dict[str, str], params: dict) -> list[str]:
    paths = []
    for path in spec.inputs.values():
        gathered = spec.gathered(path)
        for values in itertools.product(*(dim.values(params) for dim in gathered)):
            paths.append(fill(path, {**wildcards, **{d.name: v for d, v in zip(gathered, values)}}))
    return paths


def stage_body(spec: Stage, params: dict) -> dict:
    wildcards = dvc_wildcards(spec)
    body: dict = {
        "cmd": command(spec, fill(spec.log, wildcards), PARAMS_ARGS, spec.named_paths(wildcards), wildcards),
        "deps": list(dict.fromkeys([*expanded_inputs(spec, wildcards, params),
                                    *(compared_summaries(params) if spec.name == "report" else []),
                                    *code_paths(spec)])),
        **({"params": [fill(key, wildcards) for key in spec.params]} if spec.params else {}),
    }
    # "untracked" outputs (provenance, timings) are Snakemake's only: DVC would call every rerun modified.
    for kind, section in (("out", "outs"), ("metric", "metrics")):
        entries = []
        for output in spec.outputs.values():
            if output.kind != kind:
                continue
            path = fill(output.path, wildcards)
            entries.append(path if output.cache else {path: {"cache": False}})
        if entries:
            body[section] = entries
    return body


def run_paths(template: str, params: dict) -> list[str]:
    """`template` filled for every (method, seed) run in params.yaml, methods first."""
    return [fill(template, dict(zip((d.name for d in RUN_DIMS), values)))
            for values in itertools.product(*(d.values(params) for d in RUN_DIMS))]


def curve_plot(params: dict) -> dict:
    """One figure of every run's training curve; the template tells methods and seeds apart
    by the files' paths (results/{method}/seed{seed}/)."""
    spec = TRAINING_CURVE_PLOT
    curves = run_paths(STAGE_BY_NAME["train"].at(run_root(params)).outputs["curve"].path, params)
    return {spec["name"]: {"template": spec["template"], "x": spec["x"], "y": {path: spec["y"] for path in curves},
                           "title": spec["title"], "x_label": spec["x"], "y_label": spec["y_label"]}}


def dvc_document(params: dict, stages_table: tuple[Stage, ...] = STAGES) -> dict:
    stages = {}
    for spec in stages_table:
        spec = spec.at(run_root(params))
        body = stage_body(spec, params)
        if len(spec.dims) == 1:
            stages[spec.name] = {"foreach": f"${{{spec.dims[0].params_key}}}", "do": body}
        elif spec.dims:
            stages[spec.name] = {"matrix": {d.name: f"${{{d.params_key}}}" for d in spec.dims}, **body}
        else:
            stages[spec.name] = body
    return {"stages": stages, "plots": [curve_plot(params)]}


class _IndentedDumper(yaml.SafeDumper):
    """Block lists indented under their key, as dvc.yaml files are usually written."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def render(params: dict) -> str:
    """dvc.yaml's text; `params` is params.yaml as loaded (only dimension values are read)."""
    body = yaml.dump(dvc_document(params), Dumper=_IndentedDumper, sort_keys=False,
                     default_flow_style=False, width=1 << 16, allow_unicode=True)
    return HEADER + body
