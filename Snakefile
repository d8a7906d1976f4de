# cfqa: counterfactual QA with T5 — the whole DAG. Every rule calls one `cfqa` CLI stage
# declared in workflow/cfqa/dag/table.py; dvc.yaml is generated from the same table
# (`python -m cfqa.dag --write dvc.yaml`). A params profile names its own `run_root`:
#   snakemake --cores all --configfile workflow/profiles/mixtures/params.yaml   # under runs/mixtures/
from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "params.yaml"


validate(config, "workflow/schemas/params.schema.yaml")

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
