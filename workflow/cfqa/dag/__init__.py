"""One declaration of the pipeline's DAG (table.py), read by the Snakemake rules and rendered
into dvc.yaml (dvc_yaml.py; `python -m cfqa.dag --write dvc.yaml`)."""
from cfqa.dag.code import code_files, code_hash, code_paths
from cfqa.dag.table import (DEFAULT_RUN_ROOT, DIMENSIONS, LR_SELECTION, METHOD, ORDER_ONLY_INPUTS, PARAMS_FILE,
                            RUN_DIMS, RUN_MODEL, RUN_RESULTS, RUN_ROOT_KEY, SEED, STAGE_PARAMS, STAGES, VALIDATED,
                            Dimension, Output, Stage, command, compared_summaries, fill, logged, lookup, param_slice,
                            rooted, run_root, stage, stage_param_keys)

__all__ = [
    "DEFAULT_RUN_ROOT", "ORDER_ONLY_INPUTS", "PARAMS_FILE", "VALIDATED", "DIMENSIONS", "LR_SELECTION", "METHOD",
    "RUN_DIMS", "RUN_MODEL", "RUN_RESULTS", "RUN_ROOT_KEY", "SEED", "STAGE_PARAMS", "STAGES", "Dimension", "Output",
    "Stage", "code_files", "code_hash", "code_paths", "command", "compared_summaries", "fill", "logged", "lookup",
    "param_slice", "rooted", "run_root", "stage", "stage_param_keys",
]
