"""The results contract: every file a stage hands to another, typed in one place.

| file | record | written by | read by |
|---|---|---|---|
| `data/stats.json` | `DataStats` | counterfactuals | report |
| `results/{method}/seed{seed}/train.json` | `TrainRecord` | train | evaluate, report, tracking |
| `results/{method}/seed{seed}/train_curve.csv` | `CurveRow` rows | train | report, tracking |
| `results/{method}/seed{seed}/predictions.jsonl` | `PredictionRow` rows | evaluate | tests, users |
| `results/{method}/seed{seed}/metrics.json` | `MetricsRecord` | evaluate | report, tracking |
| `results/summary.json` | `Summary` | report | `dvc metrics` |
| `results/{method}/lr_selection.json` | `LrSelection` | tune | train, report |
| `models/{method}/seed{seed}/trainable.safetensors` | the trainable weights | train | evaluate |

Field names carry their units (`_pct`, `_bytes`, `_s`); records carry a schema version and
the run information (commit, dirty tree, versions, hardware, params, data and backbone
hashes, status) that makes each file self-describing.
"""
from cfqa.contract.files import (LR_SELECTION, METRICS, PREDICTIONS, TRAIN_CURVE, TRAIN_RECORD, WEIGHTS,
                                 MethodFiles, ResultsError, read_curve, read_data_stats, read_lr_selection,
                                 read_metrics, read_predictions, read_summary, read_train_record, write_curve,
                                 write_predictions, write_record)
from cfqa.contract.records import (SCHEMA_VERSION, CurveRow, DataStats, Hardware, Inference, LrSelection,
                                   LrTrial, Memorization, MetricsRecord, ParameterCounts, PredictionRow, RunInfo,
                                   SeenStats, StepMemoryParts, Summary, TrainCost, TrainRecord, TypeScores,
                                   VariantScores)

__all__ = [
    "LR_SELECTION", "LrSelection", "LrTrial", "read_lr_selection", "METRICS", "PREDICTIONS", "TRAIN_CURVE", "TRAIN_RECORD", "WEIGHTS", "MethodFiles", "ResultsError",
    "read_curve", "read_data_stats", "read_metrics", "read_predictions", "read_summary",
    "read_train_record", "write_curve", "write_predictions", "write_record", "SCHEMA_VERSION",
    "CurveRow", "DataStats", "Hardware", "Inference", "Memorization", "MetricsRecord", "ParameterCounts",
    "PredictionRow", "RunInfo", "SeenStats", "StepMemoryParts", "Summary", "TrainCost", "TrainRecord",
    "TypeScores", "VariantScores",
]
