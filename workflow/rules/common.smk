# Shared definitions: the whole configuration checked before any job, the CLI's parameter
# files, containers, and the adapters that turn the stage table (workflow/cfqa/dag/table.py)
# into each rule's input, output, params, log and shell command.
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

import cfqa.config
from cfqa.dag import (DIMENSIONS, ORDER_ONLY_INPUTS, PARAMS_FILE, code_hash, command, compared_summaries, logged,
                      param_slice, rooted, run_root, stage)

# Parameter files in order, so the CLI sees exactly the configuration Snakemake sees
# (params.yaml, then any --configfile overrides).
CONFIG_FILES = ["params.yaml", *[str(p) for p in workflow.overwrite_configfiles or []]]

# The schema (Snakefile) checks shapes; the typed config checks what a schema cannot
# (method options and the like). Either failing stops the run before any job starts.
try:
    cfqa.config.validate_config(config, CONFIG_FILES)
except cfqa.config.ConfigError as error:
    raise WorkflowError(str(error))

# Relative to the working directory where possible: cluster jobs run in another root.
PARAMS_ARGS = " ".join(
    f"--params {os.path.relpath(path) if os.path.abspath(path).startswith(os.getcwd()) else path}"
    for path in CONFIG_FILES
)

# The image every rule runs in with `--sdm apptainer`; build it from containers/cfqa.def
# (train and evaluate use the CUDA image on a GPU cluster: see workflow/profiles/slurm).
CONTAINER = "containers/cfqa-cpu.sif"
GPU_CONTAINER = "containers/cfqa-cuda.sif"
PROJECT_ROOT = Path(workflow.basedir)
# Every path of this run lives under params `run_root` ("." by default; the schema checks it):
# a profile that names its own root never writes over the default run's files.
RUN_ROOT = run_root(config)
ORDER_ONLY = {rooted(path, RUN_ROOT) for path in ORDER_ONLY_INPUTS}


def dag_stage(name):
    """The stage table's entry with its paths under this run's root."""
    return stage(name).at(RUN_ROOT)


wildcard_constraints:
    **{dim.name: "|".join(map(re.escape, dim.values(config))) for dim in DIMENSIONS},


def method_threads(wildcards):
    """A method's `train.threads`, else the shared default."""
    block = config["methods"][wildcards.method].get("train") or {}
    return block.get("threads", config["train"]["threads"])


def dag_inputs(name):
    """Named inputs; a path naming a dimension the stage is not split by is expanded over it."""
    spec = dag_stage(name)
    inputs = {}
    for key, path in spec.inputs.items():
        gathered = spec.gathered(path)
        values = {dim.name: dim.values(config) for dim in gathered}
        if path == PARAMS_FILE:                 # params.yaml and any --configfile override
            inputs[key] = [ancient(f) for f in CONFIG_FILES] if path in ORDER_ONLY else CONFIG_FILES
        elif path in ORDER_ONLY:
            inputs[key] = ancient(path)
        else:
            inputs[key] = expand(path, **values, allow_missing=True) if gathered else path
    if name == "report" and compared_summaries(config):
        inputs["compared"] = compared_summaries(config)
    return inputs


def dag_outputs(name):
    """Named outputs; folders as directory(), captioned ones in the HTML report."""
    outputs = {}
    for key, output in dag_stage(name).outputs.items():
        path = directory(output.path) if output.directory else output.path
        if output.caption:
            # Relative to the rule files in workflow/rules/.
            path = report(path, caption=f"../report/{output.caption}", category=output.category)
        outputs[key] = path
    return outputs


def dag_params(name):
    """The params.yaml slice the stage reads and the hash of the code it runs: a change in
    either reruns the job (Snakemake's rerun triggers include params)."""
    spec = stage(name)
    if spec.dims:
        values = lambda wildcards: param_slice(config, name, **{d.name: wildcards[d.name] for d in spec.dims})
    else:
        values = param_slice(config, name)
    return {"slice": values, "code": code_hash(name, PROJECT_ROOT)}


def dag_log(name):
    """Two logs: the CLI's (`cli`: its records, tracebacks included) and the job's stderr and
    stdout (`stderr`: also what the CLI printed outside its records)."""
    spec = dag_stage(name)
    return {"cli": spec.log, "stderr": spec.stderr_log}


def dag_benchmark(name):
    return dag_stage(name).benchmark


def dag_shell(name):
    """The stage's command, the one dvc.yaml runs, with Snakemake's placeholders for paths,
    its stderr and stdout also written to the job's `stderr` log (cfqa.dag.logged)."""
    spec = dag_stage(name)
    paths = {key: f"{{input.{key}}}" for key in spec.inputs if not spec.gathered(spec.inputs[key])}
    paths |= {key: f"{{output.{key}}}" for key in spec.outputs}
    wildcards = {dim.name: f"{{wildcards.{dim.name}}}" for dim in spec.dims}
    return logged(command(spec, "{log.cli}", PARAMS_ARGS, paths, wildcards), "{log.stderr}")


localrules:
    all,
    validate,
    fetch,
    report,
