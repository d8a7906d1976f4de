# Shared definitions: paths, the CLI prefix, the params each stage reads, containers.
import os

from cfqa.dag import param_slice

METHODS = list(config["methods"])

# Parameter files in order, so the CLI sees exactly the configuration Snakemake sees
# (params.yaml, then any --configfile overrides).
# Relative to the working directory where possible: cluster jobs run in another root.
PARAMS_ARGS = " ".join(
    f"--params {os.path.relpath(path) if os.path.abspath(path).startswith(os.getcwd()) else path}"
    for path in ["params.yaml", *[str(p) for p in workflow.overwrite_configfiles or []]]
)

# The image every rule runs in with `--sdm apptainer`; build it from containers/cfqa.def
# (train and evaluate use the CUDA image on a GPU cluster: see workflow/profiles/slurm).
CONTAINER = "containers/cfqa-cpu.sif"
GPU_CONTAINER = "containers/cfqa-cuda.sif"


wildcard_constraints:
    method="|".join(METHODS),


def method_threads(wildcards):
    """A method's `train.threads`, else the shared default."""
    block = config["methods"][wildcards.method].get("train") or {}
    return block.get("threads", config["train"]["threads"])


def cfqa(stage, log_path):
    """The CLI command of a stage, identical to dvc.yaml's (without the log file)."""
    return f"cfqa --log-file {log_path} {stage} {PARAMS_ARGS}"


localrules:
    all,
    report,
