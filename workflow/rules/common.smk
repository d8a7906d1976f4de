# Shared definitions: the CLI's parameter files (checked by the Snakefile), containers, and the
# adapters that turn the stage table (workflow/cfqa/dag/table.py) into each rule's input,
# output, params, log and shell command.
import os
import re
from pathlib import Path

from cfqa.config import method_train
from cfqa.dag import (DIMENSIONS, ORDER_ONLY_INPUTS, PARAMS_FILE, code_hash, command, compared_summaries,
                      job_resources, job_shell, local_stages, param_slice, rooted, run_root, stage)
from cfqa.launch import DEVICES_VARIABLE

# CONFIG_FILES (the Snakefile): the parameter files in order, so the CLI sees exactly the
# configuration Snakemake sees; the Snakefile has validated them before any rule is defined.

PARAMS_ARGS = " ".join(f"--params {path}" for path in CONFIG_FILES)

# The images rules run in with `--sdm apptainer` (containers/README.md): the GPU stages of the
# stage table (tune, train, evaluate) in the CUDA image, the others in the CPU image.
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
    """A method's `train.threads`: its train settings merged as its runs use them."""
    return method_train(config, wildcards.method)["threads"]


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


def dag_container(name):
    return GPU_CONTAINER if stage(name).needs.gpu else CONTAINER


def dag_resources(name):
    """What one job of the stage requests, from the stage table at the params' `scale`: memory,
    runtime, and one NVIDIA GPU for a GPU stage. Profiles add only what a site names
    (partitions, images); a profile's set-resources still wins (e.g. two GPUs for train)."""
    return job_resources(name, config)


def dag_shell(name):
    """The stage's command, the one dvc.yaml runs, with Snakemake's placeholders for paths,
    started by cfqa.launch (the checkout's code only; a GPU job pinned to its own devices on a
    shared box; several GPUs of a data-parallel stage as one process each), its stderr and
    stdout also written to the job's `stderr` log (cfqa.dag.job_shell)."""
    spec = dag_stage(name)
    paths = {key: f"{{input.{key}}}" for key in spec.inputs if not spec.gathered(spec.inputs[key])}
    paths |= {key: f"{{output.{key}}}" for key in spec.outputs}
    wildcards = {dim.name: f"{{wildcards.{dim.name}}}" for dim in spec.dims}
    cmd = command(spec, "{log.cli}", PARAMS_ARGS, paths, wildcards)
    return job_shell(spec, cmd, "{log.stderr}", code="{params.code}", gpus="{resources.gpu}")


# Light stages, and those that read the network for these params (fetch), run where
# Snakemake runs: on a cluster the login node, as compute nodes often have no internet.
workflow.localrules("all", *local_stages(config))


def share_local_gpus():
    """One box with several GPUs (workflow/profiles/local-gpus: `resources: gpu: N`): Snakemake
    runs at most N GPU jobs at once, and cfqa.launch pins each to its own device of the list
    CFQA_GPU_DEVICES (given, else CUDA_VISIBLE_DEVICES, else 0..N-1), which the jobs inherit.
    Runs that count no `gpu` (a cluster's scheduler pins devices itself) pin nothing."""
    total = workflow.global_resources.get("gpu")
    total = getattr(total, "value", total)
    if not total or os.environ.get(DEVICES_VARIABLE):
        return
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    os.environ[DEVICES_VARIABLE] = ",".join(visible or map(str, range(int(total))))


share_local_gpus()
