"""MLflow tracking: one run per (method, seed) with params, final and per-step metrics,
datasets, artifacts and tags (git commit, data hash, method, seed, config hash), grouped under
its pipeline run. The train stage opens the run (`training_run`), the evaluate stage logs its
results into it and ends it (`results_dir`, `method_run`); `pipeline` groups a configuration's
runs under one parent, `identity` tells runs apart, `store`, `locking` and `experiment` reach
the one SQLite store many jobs share, `view` is the runs view the MLflow UI opens on.
"""
import os

# The pipeline runs offline and on clusters; it should not send usage telemetry. setdefault:
# a user who wants it can still switch it on. Set here, before any module of this package
# imports mlflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
