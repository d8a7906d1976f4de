# Learning-rate selection, one job per method, then fine-tuning, one job per (method, seed),
# with the chosen rate; see workflow/cfqa/dag/table.py.
rule tune:
    input:
        **dag_inputs("tune"),
    output:
        **dag_outputs("tune"),
    params:
        **dag_params("tune"),
    resources:
        **dag_resources("tune"),
    threads: method_threads
    log:
        **dag_log("tune"),
    container:
        dag_container("tune")
    shell:
        dag_shell("tune")


rule train:
    input:
        **dag_inputs("train"),
    output:
        **dag_outputs("train"),
    params:
        **dag_params("train"),
    resources:
        **dag_resources("train"),
    threads: method_threads
    log:
        **dag_log("train"),
    benchmark:
        dag_benchmark("train")
    container:
        dag_container("train")
    shell:
        dag_shell("train")
