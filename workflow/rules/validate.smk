# The first job: params.yaml (and any --configfile) loaded and validated by the CLI, the same
# check `dvc repro` runs first; every other rule waits for its stamp. See workflow/cfqa/dag/table.py.
rule validate:
    input:
        **dag_inputs("validate"),
    output:
        **dag_outputs("validate"),
    params:
        **dag_params("validate"),
    resources:
        **dag_resources("validate"),
    log:
        **dag_log("validate"),
    container:
        dag_container("validate")
    shell:
        dag_shell("validate")
