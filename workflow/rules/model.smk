# The base models (tokenizer + T5, and its LM-adapted variant); see workflow/cfqa/dag/table.py.
rule pretrain:
    input:
        **dag_inputs("pretrain"),
    output:
        **dag_outputs("pretrain"),
    params:
        **dag_params("pretrain"),
    resources:
        **dag_resources("pretrain"),
    threads: config["pretrain"]["threads"]
    log:
        **dag_log("pretrain"),
    benchmark:
        dag_benchmark("pretrain")
    container:
        dag_container("pretrain")
    shell:
        dag_shell("pretrain")


# Every variant file tokenized once per backbone tokenizer, for all train and evaluate jobs.
rule tokenize:
    input:
        **dag_inputs("tokenize"),
    output:
        **dag_outputs("tokenize"),
    params:
        **dag_params("tokenize"),
    resources:
        **dag_resources("tokenize"),
    log:
        **dag_log("tokenize"),
    container:
        dag_container("tokenize")
    shell:
        dag_shell("tokenize")
