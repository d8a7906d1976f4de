"""Two identical runs write identical records: the backbone's hash covers its content only (its
wall time is in pretrain.timing.json, outside every hash), so lr_selection.json is byte-identical
and train.json differs only in the fields that measure time or memory while training."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cfqa.contract.run_info import directory_sha256
from stage_results import stage_command, tiny_params
from test_kill import COUNTERFACTUALS, DOWNLOAD, ENTITIES, PARAMS, PREPARE, PRETRAIN, stage

pytestmark = pytest.mark.slow

TUNE = tuple(stage_command("tune", PARAMS, method="lora"))
TRAIN = tuple(stage_command("train", PARAMS, ("tokenized",), method="lora", seed=0))   # at the tuned rate
# train.json's measurements of the run itself: clock times, rates, and the process's measured
# peak memory. Every other field (counts, losses, steps, hashes, run info) is the same.
TRAIN_TIMING_FIELDS = ("peak_memory_bytes", "step_time_s", "train_examples_per_s", "train_time_s", "wall_time_s",
                       "epoch_times_s", "max_epoch_time_s")


def pretrain_tune_train(root: Path) -> None:
    stage(root, PRETRAIN)
    stage(root, TUNE)
    stage(root, TRAIN)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same configuration run twice, each from pretraining on, on the same data."""
    first = tmp_path_factory.mktemp("first")
    values = tiny_params(("lora",))
    values["seeds"] = [0]
    values["train"].update(max_steps=6, eval_every=3)
    (first / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    for args in (DOWNLOAD, PREPARE, ENTITIES, COUNTERFACTUALS):
        stage(first, args)
    second = tmp_path_factory.mktemp("second")
    shutil.copy(first / "params.yaml", second / "params.yaml")
    for data in ("raw", "variants"):           # pretrain reads the corpus in data/raw
        shutil.copytree(first / "data" / data, second / "data" / data)
    pretrain_tune_train(first)
    pretrain_tune_train(second)
    return first, second


def test_the_backbone_hash_covers_content_not_the_time_pretraining_took(two_runs):
    first, second = two_runs
    for backbone in ("models/base", "models/base_lm"):
        timing = [json.loads((root / backbone / "pretrain.timing.json").read_text()) for root in two_runs]
        assert all(set(t) == {"wall_time_s"} for t in timing) and timing[0] != timing[1]
        record = (first / backbone / "pretrain.json").read_bytes()
        assert record == (second / backbone / "pretrain.json").read_bytes() and b"wall_time" not in record
        assert directory_sha256(first / backbone) == directory_sha256(second / backbone)


def test_identical_runs_write_identical_lr_selection_and_train_records(two_runs):
    first, second = two_runs
    selection = "results/lora/lr_selection.json"
    assert (first / selection).read_bytes() == (second / selection).read_bytes()

    records = [json.loads((root / "results/lora/seed0/train.json").read_text()) for root in two_runs]
    timings = [{field: record["cost"].pop(field) for field in TRAIN_TIMING_FIELDS}
               | {"validation_time_s": record.pop("validation_time_s")} for record in records]
    assert records[0] == records[1]
    assert records[0]["run"]["backbone_sha256"] == directory_sha256(first / "models/base")
    assert timings[0]["wall_time_s"] != timings[1]["wall_time_s"]       # the fields left out do differ
