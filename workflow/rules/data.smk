rule download:
    output:
        raw=directory("data/raw"),
    params:
        slice=param_slice(config, "download"),
    log:
        "logs/download.log",
    container:
        CONTAINER
    shell:
        cfqa("download", "{log}") + " --out {output.raw}"


rule prepare:
    input:
        raw="data/raw",
    output:
        prepared=directory("data/prepared"),
    params:
        slice=param_slice(config, "prepare"),
    log:
        "logs/prepare.log",
    container:
        CONTAINER
    shell:
        cfqa("prepare", "{log}") + " --raw {input.raw} --out {output.prepared}"


rule entities:
    input:
        prepared="data/prepared",
        raw="data/raw",
    output:
        entities=directory("data/entities"),
    params:
        slice=param_slice(config, "entities"),
    log:
        "logs/entities.log",
    container:
        CONTAINER
    shell:
        cfqa("entities", "{log}") + " --prepared {input.prepared} --raw {input.raw} --out {output.entities}"


rule counterfactuals:
    input:
        prepared="data/prepared",
        entities="data/entities",
    output:
        variants=directory("data/variants"),
        stats="data/stats.json",
    params:
        slice=param_slice(config, "counterfactuals"),
    log:
        "logs/counterfactuals.log",
    container:
        CONTAINER
    shell:
        cfqa("counterfactuals", "{log}")
        + " --prepared {input.prepared} --entities {input.entities} --out {output.variants} --stats {output.stats}"
