# Fine-tuning, one job per method; see workflow/cfqa/dag/table.py.
rule train:
    input:
        **dag_inputs("train"),
    output:
        **dag_outputs("train"),
    params:
        **dag_params("train"),
    threads: method_threads
    log:
        dag_log("train"),
    container:
        GPU_CONTAINER
    shell:
        dag_shell("train")
