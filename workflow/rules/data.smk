# Data stages; inputs, outputs, params and commands come from workflow/cfqa/dag/table.py.
# `fetch` is the one stage that needs the network (a local rule: it runs where snakemake runs).
rule fetch:
    input:
        **dag_inputs("fetch"),
    output:
        **dag_outputs("fetch"),
    params:
        **dag_params("fetch"),
    resources:
        **dag_resources("fetch"),
    log:
        **dag_log("fetch"),
    container:
        dag_container("fetch")
    shell:
        dag_shell("fetch")


rule download:
    input:
        **dag_inputs("download"),
    output:
        **dag_outputs("download"),
    params:
        **dag_params("download"),
    resources:
        **dag_resources("download"),
    log:
        **dag_log("download"),
    container:
        dag_container("download")
    shell:
        dag_shell("download")


rule prepare:
    input:
        **dag_inputs("prepare"),
    output:
        **dag_outputs("prepare"),
    params:
        **dag_params("prepare"),
    resources:
        **dag_resources("prepare"),
    log:
        **dag_log("prepare"),
    container:
        dag_container("prepare")
    shell:
        dag_shell("prepare")


rule entities:
    input:
        **dag_inputs("entities"),
    output:
        **dag_outputs("entities"),
    params:
        **dag_params("entities"),
    resources:
        **dag_resources("entities"),
    log:
        **dag_log("entities"),
    container:
        dag_container("entities")
    shell:
        dag_shell("entities")


rule counterfactuals:
    input:
        **dag_inputs("counterfactuals"),
    output:
        **dag_outputs("counterfactuals"),
    params:
        **dag_params("counterfactuals"),
    resources:
        **dag_resources("counterfactuals"),
    log:
        **dag_log("counterfactuals"),
    container:
        dag_container("counterfactuals")
    shell:
        dag_shell("counterfactuals")
