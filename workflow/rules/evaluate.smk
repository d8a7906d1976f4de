rule evaluate:
    input:
        variants="data/variants",
        model="models/{method}",
        train="results/{method}/train.json",
        curve="results/{method}/train_curve.csv",
    output:
        predictions="results/{method}/predictions.jsonl",
        metrics="results/{method}/metrics.json",
    params:
        slice=lambda wildcards: param_slice(config, "evaluate", wildcards.method),
    threads: config["evaluate"]["threads"]
    log:
        "logs/evaluate/{method}.log",
    container:
        GPU_CONTAINER
    shell:
        cfqa("evaluate", "{log}")
        + " --method {wildcards.method} --variants {input.variants} --models models"
        + " --results results/{wildcards.method}"
