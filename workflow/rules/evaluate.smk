# Generation and scoring, one job per (method, seed); see workflow/cfqa/dag/table.py.
rule evaluate:
    input:
        **dag_inputs("evaluate"),
    output:
        **dag_outputs("evaluate"),
    params:
        **dag_params("evaluate"),
    resources:
        **dag_resources("evaluate"),
    threads: config["evaluate"]["threads"]
    log:
        **dag_log("evaluate"),
    benchmark:
        dag_benchmark("evaluate")
    container:
        dag_container("evaluate")
    shell:
        dag_shell("evaluate")
