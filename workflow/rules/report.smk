REPORT_FIGURES = ["contextual_em", "memorization_ratio", "accuracy_vs_cost", "training_curves"]


rule report:
    input:
        metrics=expand("results/{method}/metrics.json", method=METHODS),
        train=expand("results/{method}/train.json", method=METHODS),
        stats="data/stats.json",
    output:
        html=report("reports/index.html", caption="../report/report.rst", category="Report"),
        markdown="reports/report.md",
        figures=[
            report(f"reports/{name}.png", caption=f"../report/{name}.rst", category="Figures")
            for name in REPORT_FIGURES
        ],
        summary=report("results/summary.json", caption="../report/summary.rst", category="Report"),
    params:
        slice=param_slice(config, "report"),
    log:
        "logs/report.log",
    container:
        CONTAINER
    shell:
        cfqa("report", "{log}")
        + " --results results --data-stats {input.stats} --out reports --summary {output.summary}"
