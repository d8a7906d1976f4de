"""The stage table's needs as a Markdown table (the README shows the t5-large profile's):
`python -m cfqa.dag --needs workflow/profiles/disentqa-t5-large/params.yaml` prints it."""
from __future__ import annotations

from cfqa.dag.table import STAGES, scale_of


def _runtime(minutes: int) -> str:
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes / 60:g} h"


def markdown(params: dict) -> str:
    """One row per stage: its GPU, whether it reads the network (for these params), the memory
    and runtime of one job at the params' scale, and where the job runs on a cluster."""
    scale = scale_of(params)
    rows = ["| stage | GPU | network | memory | runtime | on a cluster |", "|---|---|---|---|---|---|"]
    for spec in STAGES:
        needs = spec.needs
        size = needs.resources(scale)
        gpu = "1 (CUDA image)" if needs.gpu else "–"
        if needs.data_parallel:
            gpu += "; N with `gpu: N`: N processes"
        network = "yes" if needs.network(params) else "no"
        where = "where snakemake runs (login node)" if needs.local(params) else \
            ("job on the GPU partition" if needs.gpu else "job on the CPU partition")
        rows.append(f"| {spec.name} | {gpu} | {network} | {size.mem_mb / 1000:g} GB | {_runtime(size.runtime_min)} "
                    f"| {where} |")
    return "\n".join(rows) + "\n"
