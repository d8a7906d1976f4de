"""One declaration of the pipeline's DAG (table.py), read by the Snakemake rules and rendered
into dvc.yaml (dvc_yaml.py; `python -m cfqa.dag --write dvc.yaml`)."""
from cfqa.dag.code import code_files, code_hash, code_paths
from cfqa.dag.table import (DIMENSIONS, LR_SELECTION, METHOD, ORDER_ONLY_INPUTS, PARAMS_FILE, VALIDATED, RUN_DIMS, RUN_MODEL, RUN_RESULTS, SEED, STAGE_PARAMS, STAGES,
                            Dimension, Output, Stage, command, fill, lookup, param_slice, stage, stage_param_keys)

__all__ = [
    "ORDER_ONLY_INPUTS", "PARAMS_FILE", "VALIDATED", "DIMENSIONS", "LR_SELECTION", "METHOD", "RUN_DIMS", "RUN_MODEL", "RUN_RESULTS", "SEED", "STAGE_PARAMS", "STAGES", "Dimension", "Output", "Stage", "code_files", "code_hash",
    "code_paths", "command", "fill", "lookup", "param_slice", "stage", "stage_param_keys",
]
