# cfqa: counterfactual QA with T5 — the whole DAG. Every rule calls one `cfqa` CLI stage
# declared in workflow/cfqa/dag/table.py; dvc.yaml is generated from the same table
# (`python -m cfqa.dag --write dvc.yaml`). A params profile names its own `run_root`:
#   snakemake --cores all --configfile workflow/profiles/mixtures/params.yaml   # under runs/mixtures/
import os
import sys

from snakemake.utils import min_version, validate

from cfqa import snakemake_start

min_version("9.0")

# Parameter files in order (params.yaml, then any --configfile), the list every job's CLI gets.
# Relative to the working directory where possible: cluster jobs may see the checkout under
# another root, and a moved or copied checkout keeps the inputs Snakemake recorded for `validate`.
CONFIG_FILES = ["params.yaml", *[os.path.relpath(p) if os.path.abspath(p).startswith(os.getcwd() + os.sep) else str(p)
                                 for p in workflow.overwrite_configfiles or []]]
# cfqa reads and validates them before Snakemake does: a bad file or value stops here with the
# one line `cfqa validate` prints, exit status 2 (workflow/cfqa/snakemake_start.py).
snakemake_start.check_params_files(CONFIG_FILES)

configfile: "params.yaml"


snakemake_start.check_config(config, CONFIG_FILES)
# Already valid: this fills in the schema's defaults (run_root, report.compare_runs). The schema is
# generated from cfqa.config's typed dataclasses (python -m cfqa.config_schema --write).
validate(config, "workflow/schemas/params.schema.yaml")

# The locks a killed Snakemake left are removed (never a live one's): a rerun needs no --unlock.
if workflow.is_main_process:
    for stale in snakemake_start.clear_dead_locks():
        print(f"cfqa: removed {stale}, the lock of a Snakemake run that is no longer running", file=sys.stderr)

report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.report.output,
    default_target: True
