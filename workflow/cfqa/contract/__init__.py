"""The results contract: every file a stage hands to another, typed in one place.

| file | record | written by | read by |
|---|---|---|---|
| `data/stats.json` | `DataStats` | counterfactuals | report |
| `results/{method}/seed{seed}/train.json` | `TrainRecord` | train | evaluate, report, tracking |
| `results/{method}/seed{seed}/train_curve.csv` | `CurveRow` rows | train | report, tracking |
| `results/{method}/seed{seed}/predictions.jsonl` | `PredictionRow` rows | evaluate | tests, users |
| `results/{method}/seed{seed}/per_question.jsonl` | `QuestionScores` rows (every metric per question) | evaluate | report |
| `results/{method}/seed{seed}/metrics.json` | `MetricsFile` (scores) | evaluate | report, tracking |
| `results/{method}/seed{seed}/evaluation_run.json` | `EvaluationRun` (provenance, speed) | evaluate | report, tracking |
| `results/{method}/seed{seed}/headline.json` | `Headline` | evaluate | report (per method: results/headline.json) |
| `results/headline.json` | `MethodHeadline` per method | report | `dvc metrics`, `dvc exp show` (THE DVC metric) |
| `results/summary.json` | `Summary` | report | users; reports that set this run beside theirs (`report.compare_runs`) |
| `logs/benchmarks/{stage}/{method}/seed{seed}.tsv` | `BenchmarkRow` rows | Snakemake (`benchmark:`) | report |
| `results/{method}/lr_selection.json` | `LrSelection` | tune | train, report |
| `models/{method}/seed{seed}/trainable.safetensors` | the trainable weights | train | evaluate |

Field names carry their units (`_pct`, `_bytes`, `_s`); records carry a schema version and
the run information (commit, dirty tree, versions, hardware, params, data and backbone
hashes, status) that makes each file self-describing. `read_metrics` returns metrics.json
joined with evaluation_run.json (a `MetricsRecord`); they are two files so that what DVC
tracks holds no timing, commit or machine, and an identical rerun writes the same bytes.
"""
from cfqa.contract.files import (HEADLINE, LR_SELECTION, METRICS, PREDICTIONS, EVALUATION_RUN, PER_QUESTION, TRAIN_CURVE,
                                 TRAIN_RECORD, WEIGHTS, MethodFiles, ResultsError, read_benchmark, read_curve, read_data_stats, read_headline,
                                 read_lr_selection, read_metrics, read_predictions, read_question_scores, read_run_headline,
                                 read_summary, read_train_record, write_curve, write_metrics, write_predictions,
                                 write_question_scores, write_record, write_run_headline)
from cfqa.contract.records import (SCHEMA_VERSION, BenchmarkRow, CurveRow, DataStats, EvaluationRun, FirstTargetToken,
                                   Hardware, Headline, Inference, LrRung, LrSelection, LrTrial, Memorization,
                                   MethodHeadline, MetricsFile, MetricsRecord,
                                   ParameterCounts, PredictionRow, QuestionScores, RunInfo, SeenStats, StepMemoryParts, Summary,
                                   TrainCost, TrainRecord, TypeScores, VariantScores)

__all__ = [
    "HEADLINE", "EVALUATION_RUN", "EvaluationRun", "Headline", "MetricsFile", "read_headline", "write_metrics",
    "MethodHeadline", "read_run_headline", "write_run_headline",
    "LR_SELECTION", "LrRung", "LrSelection", "LrTrial", "read_lr_selection", "METRICS", "PREDICTIONS", "TRAIN_CURVE", "TRAIN_RECORD", "WEIGHTS", "MethodFiles", "ResultsError",
    "BenchmarkRow", "read_benchmark", "read_curve", "read_data_stats", "read_metrics", "read_predictions", "read_summary",
    "read_train_record", "write_curve", "write_predictions", "write_record", "SCHEMA_VERSION",
    "CurveRow", "DataStats", "FirstTargetToken", "Hardware", "Inference", "Memorization", "MetricsRecord", "ParameterCounts",
    "PredictionRow", "RunInfo", "SeenStats", "StepMemoryParts", "Summary", "TrainCost", "TrainRecord",
    "TypeScores", "VariantScores", "PER_QUESTION", "QuestionScores", "read_question_scores", "write_question_scores",
]
