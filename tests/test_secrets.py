"""No secret in a log: a password in `tracking.uri` (MLflow's REST client names the whole request
URL, credentials included, in its errors) never reaches a terminal or a log file; the URI is
shown with the password masked. Train and evaluate run as real processes against an MLflow
server that is not there, so tracking fails, is a warning, and the stages finish."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from cfqa.io.redact import redact
from pipeline_support import tool_env

SECRET = "S3cr3t-pw"
SECRET_URI = f"http://alice:{SECRET}@127.0.0.1:9/"        # port 9 (discard): nothing answers there
MASKED = "http://alice:***@127.0.0.1:9/"


@pytest.mark.parametrize("text, expected", [
    (f"API request to {SECRET_URI}api/2.0 failed", f"API request to {MASKED}api/2.0 failed"),
    ("postgresql://bob:pa:ss@db.example:5432/mlflow", "postgresql://bob:***@db.example:5432/mlflow"),
    ("https://ghp_TOKEN123@github.com/x.git", "https://***@github.com/x.git"),
    ("s3://bucket/key?X-Amz-Signature=abc123&X-Amz-Credential=AKIA/x&part=1",
     "s3://bucket/key?X-Amz-Signature=***&X-Amz-Credential=***&part=1"),
    ("https://api.example/v1?api_key=k3y&page=2", "https://api.example/v1?api_key=***&page=2"),
    ("sqlite:///mlflow.db and http://host:5000/#/experiments/1", "sqlite:///mlflow.db and http://host:5000/#/experiments/1"),
    ("train.lr = 0.001; a=b", "train.lr = 0.001; a=b"),
])
def test_redact_masks_credentials_and_nothing_else(text, expected):
    assert redact(text) == expected


@pytest.mark.slow
def test_no_log_or_stderr_of_a_run_holds_the_tracking_password(stage_results, tmp_path):
    root = tmp_path / "run"
    for data in ("data/variants", "models/base", "models/base_lm", "results/lora/lr_selection.json"):
        copy = shutil.copytree if (stage_results.root / data).is_dir() else shutil.copy
        (root / data).parent.mkdir(parents=True, exist_ok=True)
        copy(stage_results.root / data, root / data)
    values = yaml.safe_load(stage_results.params.read_text())
    values["tracking"]["uri"] = SECRET_URI
    values["train"].update(max_steps=4, eval_every=2)
    (root / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    bad_uri = root / "bad-uri.yaml"                # a rejected value is quoted in the error line
    bad_uri.write_text(yaml.safe_dump({"tracking": {"uri": SECRET_URI + "\n"}}))
    run = ["--method", "lora", "--seed", "0", "--variants", "data/variants", "--models", "models"]
    commands = {
        "validate": ["validate", "--params", "params.yaml"],
        "validate-bad": ["validate", "--params", "params.yaml", "--params", "bad-uri.yaml"],
        "train": ["train", "--params", "params.yaml", *run, "--out", "models/lora/seed0",
                  "--results", "results/lora/seed0", "--lr-selection", "results/lora/lr_selection.json"],
        "evaluate": ["evaluate", "--params", "params.yaml", *run, "--model", "models/lora/seed0",
                     "--results", "results/lora/seed0"],
    }
    # MLflow retries a refused request for minutes by default.
    env = tool_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    outputs = {}
    for name, args in commands.items():
        done = subprocess.run(["cfqa", "--log-file", f"logs/{name}.log", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        outputs[name] = done
        assert done.returncode == (2 if name == "validate-bad" else 0), done.stderr[-3000:]
    texts = {f"{name} stderr": done.stderr + done.stdout for name, done in outputs.items()}
    texts |= {str(path.relative_to(root)): path.read_text(encoding="utf-8", errors="replace")
              for path in sorted((root / "logs").rglob("*")) if path.is_file()}
    leaks = [where for where, text in texts.items() if SECRET in text]
    assert leaks == [], f"the password is in {leaks}"
    # The URI was printed where it tells the user something, masked: the test saw the places.
    shown = [where for where, text in texts.items() if MASKED in text]
    assert {"train stderr", "evaluate stderr", "validate-bad stderr", "logs/train.log", "logs/evaluate.log"} <= set(shown)
    assert "goes on without that record" in outputs["evaluate"].stderr


def test_the_report_names_the_tracking_store_with_the_password_masked():
    import dataclasses

    from cfqa.config import load
    from cfqa.stages.report import _overview

    cfg = load()
    cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, uri=SECRET_URI))
    shown = _overview(cfg)["MLflow experiment"]
    assert SECRET not in shown and MASKED in shown
