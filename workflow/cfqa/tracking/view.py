"""What the MLflow UI opens on: the runs table of an experiment, one row group per
configuration (its seeds averaged), the headline numbers as the first columns, sorted by the
primary endpoint.

MLflow 3.17's UI has no per-experiment default columns, but it has shareable views: the
experiment tag `mlflow.sharedViewState.<key>` holds a view's state as JSON (columns, grouping,
sort order: what its "Share" button writes), and `#/experiments/<id>/runs?viewStateShareKey=<key>`
opens it (server/js: useSharedExperimentViewState; the keys are its `EXPERIMENT_PAGE_UI_STATE_FIELDS`
and `EXPERIMENT_PAGE_QUERY_PARAM_KEYS`). Every experiment this project creates or opens gets
that tag, and `make ui` prints the link (`python -m cfqa.tracking.view`).

The headline numbers (headline.json) are logged a second time under short names that start
with `Headline/` (`Headline/cf_em_pct`: test contextual EM on counterfactual contexts, as
results/headline.json's `cf_em%`): MLflow lists metric keys in code-point order, where an
upper-case first letter comes before every other key the runs hold (`by_type.*`, `sets.*`,
`system/*`, ...), so they also come first where no view applies (a run's metrics, the charts,
the column picker), and short names fit the table's columns.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cfqa.contract import Headline
from cfqa.tracking.locking import with_lock_retry
from cfqa.tracking.store import resolved_uri, sqlite_database_path

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Experiment

HEADLINE_PREFIX = "Headline/"
SHARE_KEY = "cfqa-runs"
SHARED_VIEW_TAG = f"mlflow.sharedViewState.{SHARE_KEY}"
# The primary endpoint: the runs table sorts by it, best first.
PRIMARY_METRIC = f"{HEADLINE_PREFIX}cf_em_pct"
# Test contextual EM per context variant: f_em_pct and cf_em_pct as in results/headline.json.
VARIANT_NAMES = {"counterfactual": "cf", "factual": "f"}
VARIANT_ORDER = ("counterfactual", "factual", "empty", "random")
# The tags a configuration's runs share (cfqa.tracking.identity.RunIdentity): one group per configuration.
GROUP_TAGS = ("method", "config_hash")
SHOWN_TAGS = ("seed", "config_hash", "dvc_experiment")
# Columns every view has, by their ag-grid ids: the run name, Created and Duration (a column
# without a canonical key: its id is its field's name).
FIXED_COLUMNS = ("attributes.`Run Name`", "runDateAndNestInfo", "duration")
COSTS = ("trainable_params", "step_time_s", "peak_memory_bytes")
# Widths (px) of the view's columns: wide enough for their names.
RUN_NAME_WIDTH, METRIC_WIDTH = 380, 175
PCT_DECIMALS = 2


def variant_metric(variant: str) -> str:
    return f"{HEADLINE_PREFIX}{VARIANT_NAMES.get(variant, variant)}_em_pct"


def headline_metrics(record: Headline) -> dict[str, float]:
    """The run's headline.json as `Headline/` metrics: `<variant>_em_pct` (test contextual EM;
    cf, f, empty, random), `memorization_<set>_pct` (the memorization ratio), and the costs
    under their own names; absent values (None) are left out. Percentages are rounded to
    PCT_DECIMALS for the table (the exact values are the run's `sets.*` and `memorization.*`)."""
    flat = {variant_metric(variant): value for variant, value in record.test_contextual_em_pct.items()}
    flat |= {f"{HEADLINE_PREFIX}memorization_{name}_pct": value for name, value in record.memorization_ratio_pct.items()}
    flat = {key: round(value, PCT_DECIMALS) for key, value in flat.items() if value is not None}
    flat |= {f"{HEADLINE_PREFIX}{name}": getattr(record, name) for name in COSTS}
    return {key: float(value) for key, value in flat.items() if value is not None}


def headline_metric_names() -> list[str]:
    """The Headline/ metrics every evaluated run holds, in the order the view shows them."""
    return ([variant_metric(v) for v in VARIANT_ORDER]
            + [f"{HEADLINE_PREFIX}memorization_{s}_pct" for s in ("test", "seen")]
            + [f"{HEADLINE_PREFIX}{name}" for name in COSTS])


def _column(kind: str, key: str) -> str:
    # The UI's canonical column key (makeCanonicalSortKey): kind.`key`.
    return f"{kind}.`{key}`"


def view_state() -> dict[str, Any]:
    """The runs view: columns, grouping (average over a configuration's seeds) and sort order."""
    metrics = [_column("metrics", name) for name in headline_metric_names()]
    columns = [_column("tags", name) for name in SHOWN_TAGS] + metrics
    return {
        "selectedColumns": columns,
        # The UI would order metric columns by name; these keep the primary endpoint first.
        "columnOrder": [*FIXED_COLUMNS, *columns],
        "columnWidths": {FIXED_COLUMNS[0]: RUN_NAME_WIDTH, **{column: METRIC_WIDTH for column in metrics}},
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "tag", "groupByData": tag} for tag in GROUP_TAGS]},
        "useGroupedValuesInCharts": True,
        "runListHidden": False,
        "orderByKey": _column("metrics", PRIMARY_METRIC),
        "orderByAsc": False,
    }


def view_state_json() -> str:
    return json.dumps(view_state(), sort_keys=True, separators=(",", ":"))


def pin_runs_view(client: MlflowClient, experiment: Experiment) -> bool:
    """Gives `experiment` this project's runs view (the shared-view tag) unless it holds this
    very view already; True when the tag was written."""
    state = view_state_json()
    if experiment.tags.get(SHARED_VIEW_TAG) == state:
        return False
    with_lock_retry(lambda: client.set_experiment_tag(experiment.experiment_id, SHARED_VIEW_TAG, state),
                    "pin the runs view")
    return True


def runs_url(base_url: str, experiment_id: str | None) -> str:
    """The link that opens the runs view (the experiments list when the experiment is unknown)."""
    base = base_url.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    return (f"{base}/#/experiments/{experiment_id}/runs"
            f"?viewStateShareKey={SHARE_KEY}&workflowType=machine_learning")


def experiment_id(database: Path, experiment: str) -> str | None:
    """The id of `experiment` in a SQLite store, read without creating or migrating anything
    (None when the store or the experiment does not exist yet)."""
    import sqlite3

    if not database.is_file():
        return None
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        row = connection.execute("SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'",
                                 (experiment,)).fetchone()
    return None if row is None else str(row[0])


def main(argv: list[str] | None = None) -> int:
    """`python -m cfqa.tracking.view`: prints the runs view's link for `make ui`."""
    from cfqa import config as config_module

    parser = argparse.ArgumentParser(prog="python -m cfqa.tracking.view", description=main.__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="where the MLflow UI listens")
    args = parser.parse_args(argv)
    tracking = config_module.load([args.params]).tracking
    uri = resolved_uri(tracking.uri)
    database = sqlite_database_path(uri)
    found = experiment_id(database, tracking.experiment) if database is not None else None
    if found is not None:      # a store written before the view existed gets it now
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        pin_runs_view(client, client.get_experiment(found))
    print(runs_url(args.url, found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
