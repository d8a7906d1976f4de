"""The glossary of method keys: what each method of the run trains, read from the method
registry's own descriptions (cfqa.methods.options.METHOD_DESCRIPTIONS), never typed in the
report, and where its key comes from (params.yaml `methods:`)."""
from __future__ import annotations

import json
from typing import Sequence

from cfqa.methods.options import METHOD_DESCRIPTIONS
from cfqa.report import formatting as fmt
from cfqa.report.inputs import MethodResults
from cfqa.report.tables import Table, method_cells, method_headers


def _options(result: MethodResults) -> str:
    options = result.runs[0].train.run.params.get("options")
    if not options:
        return "none"
    return ", ".join(f"{key} {json.dumps(value, separators=(', ', ': '))}" for key, value in sorted(options.items()))


def glossary_table(results: Sequence[MethodResults]) -> Table:
    # The options last: the longest cells, where a narrow page may scroll.
    rows = tuple((*method_cells(r), f"`{r.registry_method}`",
                  METHOD_DESCRIPTIONS.get(r.registry_method, fmt.MISSING),
                  fmt.share(r.runs[0].train.params.trainable_pct), f"`{r.backbone}`",
                  ", ".join(map(str, r.seeds)), _options(r))
                 for r in results)
    others = [name for name in METHOD_DESCRIPTIONS if name not in {r.registry_method for r in results}]
    return Table(
        key="methods",
        title="Method keys",
        headers=(*method_headers(results), "registry method", "what it trains", "trainable %", "backbone",
                 "seeds", "options"),
        rows=rows,
        caption="Method: the key under `methods:` in params.yaml, which names the results, the MLflow runs "
                "and the DVC stages. Registry method: the implementation it runs (the block's `method:`, else the "
                "key itself), in workflow/cfqa/methods/<registry method>.py; what it trains is that registry "
                "entry's own description; everything else stays frozen. Trainable %: trainable parameters as a "
                "share of the model's. Options: the method's settings in its block."
                + (" Also in the registry, not run here: "
                   + "; ".join(f"`{name}`: {METHOD_DESCRIPTIONS[name]}" for name in others) + "." if others else ""),
    )
