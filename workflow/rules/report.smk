# Tables, figures, HTML and Markdown report over every (method, seed) run; see workflow/cfqa/dag/table.py.
rule report:
    input:
        **dag_inputs("report"),
    output:
        **dag_outputs("report"),
    params:
        **dag_params("report"),
    resources:
        **dag_resources("report"),
    log:
        **dag_log("report"),
    container:
        dag_container("report")
    shell:
        dag_shell("report")
