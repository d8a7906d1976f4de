rule pretrain:
    input:
        raw="data/raw",
    output:
        base=directory("models/base"),
        base_lm=directory("models/base_lm"),
    params:
        slice=param_slice(config, "pretrain"),
    threads: config["pretrain"]["threads"]
    log:
        "logs/pretrain.log",
    container:
        CONTAINER
    shell:
        cfqa("pretrain", "{log}") + " --raw {input.raw} --out {output.base} --out-lm {output.base_lm}"
