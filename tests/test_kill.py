"""A stage killed with SIGKILL half-way leaves no output that looks complete, and its rerun
removes the debris and writes exactly what an uninterrupted run writes.

Each stage runs as a real `cfqa` process on the tiny configuration; the kill is delivered by
the process itself at a chosen call (a function of the stage replaced by one that sends
SIGKILL before calling it), so the point of the kill does not depend on timing."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cfqa import cli
from cfqa.atomic_io import is_temporary
from pipeline_support import tool_env
from stage_results import tiny_params, working_directory

pytestmark = pytest.mark.slow

# Runs `cfqa ARGS...` with MODULE.ATTRIBUTE replaced by a function that kills the process
# (SIGKILL: no cleanup, no finally blocks) when it is called for the CALL-th time.
KILL_AT = """
import importlib, os, signal, sys
module_name, attribute, call = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = importlib.import_module(module_name)
original = getattr(module, attribute)
calls = [0]
def kill_at(*args, **kwargs):
    calls[0] += 1
    if calls[0] == call:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(module, attribute, kill_at)
from cfqa.cli import main
sys.exit(main(sys.argv[4:]))
"""

PREPARE = ("prepare", "--raw", "data/raw", "--out", "data/prepared")
COUNTERFACTUALS = ("counterfactuals", "--prepared", "data/prepared", "--entities", "data/entities",
                   "--out", "data/variants", "--stats", "data/stats.json")
TRAIN = ("train", "--method", "lora", "--seed", "0", "--variants", "data/variants", "--models", "models",
         "--out", "models/lora/seed0", "--results", "results/lora/seed0")


def stage(root: Path, args: tuple[str, ...], log: str | None = None) -> None:
    log_args = ["--log-file", log] if log else []
    with working_directory(root):
        code = cli.main([*log_args, args[0], "--params", "params.yaml", *args[1:]])
    assert code == 0, f"cfqa {' '.join(args)} exited {code}"


def killed(root: Path, args: tuple[str, ...], module: str, attribute: str, call: int = 1) -> None:
    result = subprocess.run([sys.executable, "-c", KILL_AT, module, attribute, str(call),
                             args[0], "--params", "params.yaml", *args[1:]],
                            cwd=root, env=tool_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def debris(root: Path) -> list[str]:
    """Temporary files or directories of atomic writes, and lock files, anywhere under root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*")
                  if is_temporary(p.name) or p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of every stage the tests kill (and those before them)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    values = tiny_params(("lora",))
    values["seeds"] = [0]
    values["train"].update(max_steps=6, eval_every=3)     # a checkpoint at step 3, the end at 6
    (root / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    stage(root, ("download", "--out", "data/raw"))
    stage(root, PREPARE)
    stage(root, ("entities", "--prepared", "data/prepared", "--raw", "data/raw", "--out", "data/entities"))
    stage(root, COUNTERFACTUALS)
    stage(root, ("pretrain", "--raw", "data/raw", "--out", "models/base", "--out-lm", "models/base_lm"))
    stage(root, TRAIN)
    return root


def copy_of(reference: Path, target: Path, *paths: str) -> Path:
    shutil.copy(reference / "params.yaml", target / "params.yaml")
    for path in paths:
        shutil.copytree(reference / path, target / path)
    return target


def test_killed_prepare_is_cleaned_and_rerun_to_the_same_files(reference, tmp_path):
    root = copy_of(reference, tmp_path, "data/raw")
    # Killed after the training file is streamed, before the dev file: a half-written split.
    killed(root, PREPARE, "cfqa.stages.prepare", "prepare_file", call=2)
    assert not (root / "data/prepared").exists()
    assert [p.name for p in (root / "data").iterdir() if is_temporary(p.name, "prepared")], \
        "the kill should have left the temporary directory this test is about"

    stage(root, PREPARE, log="prepare.log")
    assert files(root / "data/prepared") == files(reference / "data/prepared")
    assert debris(root) == []
    assert "removed what a killed run left: data/.prepared." in (root / "prepare.log").read_text()


@pytest.mark.parametrize("attribute, call, left", [
    ("_write_split", 3, "a temporary variants directory, no variants, no stats"),
    ("write_record", 1, "variants committed, stats.json not yet written"),
])
def test_killed_counterfactuals_leave_both_outputs_or_neither_after_rerun(reference, tmp_path, attribute,
                                                                         call, left):
    root = copy_of(reference, tmp_path, "data/raw", "data/prepared", "data/entities")
    killed(root, COUNTERFACTUALS, "cfqa.stages.counterfactuals", attribute, call)
    assert not (root / "data/stats.json").exists()          # never statistics without their variants
    if attribute == "_write_split":
        assert not (root / "data/variants").exists() and debris(root)
    else:
        assert (root / "data/variants").is_dir()

    stage(root, COUNTERFACTUALS)
    assert files(root / "data/variants") == files(reference / "data/variants")
    assert (root / "data/stats.json").read_bytes() == (reference / "data/stats.json").read_bytes()
    assert debris(root) == []


def test_orphan_variants_are_removed_before_the_rerun_works(reference, tmp_path):
    """If the rerun itself fails, the variants a killed run left are gone: neither output."""
    root = copy_of(reference, tmp_path, "data/raw", "data/prepared", "data/entities")
    killed(root, COUNTERFACTUALS, "cfqa.stages.counterfactuals", "write_record")
    (root / "data/prepared/test.jsonl").write_text("{not json\n")
    with working_directory(root):
        code = cli.main([COUNTERFACTUALS[0], "--params", "params.yaml", *COUNTERFACTUALS[1:]])
    assert code == 2
    assert not (root / "data/variants").exists() and not (root / "data/stats.json").exists()


def test_killed_train_resumes_to_the_uninterrupted_weights(reference, tmp_path):
    root = copy_of(reference, tmp_path, "data/variants", "models/base", "models/base_lm")
    # The second checkpoint (step 6) is never written: the run dies after step 6's validation.
    killed(root, TRAIN, "cfqa.training.loop", "save_checkpoint", call=2)
    assert not (root / "models/lora/seed0").exists() and not (root / "results/lora/seed0").exists()
    assert (root / "models/.checkpoints/lora/seed0/state.json").is_file()

    stage(root, TRAIN, log="train.log")
    assert "resuming from models/.checkpoints/lora/seed0 at step 3" in (root / "train.log").read_text()
    weights = "models/lora/seed0/trainable.safetensors"
    assert (root / weights).read_bytes() == (reference / weights).read_bytes()
    assert (root / "results/lora/seed0/train_curve.csv").read_bytes() == \
        (reference / "results/lora/seed0/train_curve.csv").read_bytes()
    assert not (root / "models/.checkpoints/lora/seed0").exists()
    assert debris(root) == []


def test_a_killed_checkpoint_save_is_cleaned_and_training_resumes(reference, tmp_path):
    root = copy_of(reference, tmp_path, "data/variants", "models/base", "models/base_lm")
    # Killed inside the step-6 checkpoint save, after its weights are written: a temporary
    # directory next to the step-3 checkpoint.
    killed(root, TRAIN, "cfqa.training.checkpoint", "write_json", call=2)
    assert debris(root / "models/.checkpoints")

    stage(root, TRAIN, log="train.log")
    log = (root / "train.log").read_text()
    assert "removed an unfinished checkpoint save" in log and "at step 3" in log
    weights = "models/lora/seed0/trainable.safetensors"
    assert (root / weights).read_bytes() == (reference / weights).read_bytes()
    assert debris(root) == []
