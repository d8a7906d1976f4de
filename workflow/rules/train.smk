rule train:
    input:
        variants="data/variants",
        base="models/base",
        base_lm="models/base_lm",
    output:
        model=directory("models/{method}"),
        train="results/{method}/train.json",
        curve="results/{method}/train_curve.csv",
    params:
        slice=lambda wildcards: param_slice(config, "train", wildcards.method),
    threads: method_threads
    log:
        "logs/train/{method}.log",
    container:
        GPU_CONTAINER
    shell:
        cfqa("train", "{log}")
        + " --method {wildcards.method} --variants {input.variants} --models models"
        + " --out {output.model} --results results/{wildcards.method}"
