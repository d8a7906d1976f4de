"""One declaration of the pipeline's DAG (table.py), read by the Snakemake rules and rendered
into dvc.yaml (dvc_yaml.py; `python -m cfqa.dag --write dvc.yaml`)."""
from cfqa.dag.code import code_files, code_hash, code_paths
from cfqa.dag.table import (DEFAULT_RUN_ROOT, DIMENSIONS, GPU_RESOURCES, LR_SELECTION, METHOD, ORDER_ONLY_INPUTS,
                            PARAMS_FILE, RUN_DIMS, RUN_MODEL, RUN_RESULTS, RUN_ROOT_KEY, SCALE_KEY, SCALES, SEED,
                            STAGE_PARAMS, STAGES, VALIDATED, Dimension, Needs, Option, Output, Resources, Stage,
                            arguments, command, compared_summaries, fill, job_resources, job_shell, local_stages,
                            logged, lookup, param_slice, rooted, run_root, scale_of, stage, stage_param_keys)

__all__ = [
    "DEFAULT_RUN_ROOT", "ORDER_ONLY_INPUTS", "PARAMS_FILE", "VALIDATED", "DIMENSIONS", "GPU_RESOURCES", "LR_SELECTION",
    "METHOD", "RUN_DIMS", "RUN_MODEL", "RUN_RESULTS", "RUN_ROOT_KEY", "SCALE_KEY", "SCALES", "SEED", "STAGE_PARAMS",
    "STAGES", "Dimension", "Needs", "Option", "Output", "Resources", "Stage", "arguments", "code_files", "code_hash",
    "code_paths", "command", "compared_summaries", "fill", "job_resources", "job_shell", "local_stages", "logged",
    "lookup", "param_slice", "rooted", "run_root", "scale_of", "stage", "stage_param_keys",
]
