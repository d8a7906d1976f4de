"""A stage killed with SIGKILL half-way leaves no output that looks complete, and its rerun
removes the debris and writes exactly what an uninterrupted run writes.

Each stage runs as a real `cfqa` process on the tiny configuration; the kill is delivered by
the process itself at a chosen call (a function of the stage replaced by one that sends
SIGKILL before calling it), so the point of the kill does not depend on timing."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cfqa import cli
from cfqa.io.atomic_io import is_temporary
from cfqa.config import PROJECT_ROOT
from pipeline_support import tool_env
from project_copy import copy_project
from stage_results import stage_command, tiny_params, working_directory

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

# The stages' command lines, from the stage table, run in the run's directory. Train runs at the
# configured rate on the variants: no tune or tokenize job runs before it here.
PARAMS = Path("params.yaml")
DOWNLOAD = tuple(stage_command("download", PARAMS, ("fetched",)))
PREPARE = tuple(stage_command("prepare", PARAMS))
ENTITIES = tuple(stage_command("entities", PARAMS))
COUNTERFACTUALS = tuple(stage_command("counterfactuals", PARAMS))
PRETRAIN = tuple(stage_command("pretrain", PARAMS, ("fetched",)))
TRAIN = tuple(stage_command("train", PARAMS, ("tokenized", "lr-selection"), method="lora", seed=0))


def stage(root: Path, args: tuple[str, ...], log: str | None = None) -> None:
    log_args = ["--log-file", log] if log else []
    with working_directory(root):
        code = cli.main([*log_args, *args])
    assert code == 0, f"cfqa {' '.join(args)} exited {code}"


def killed(root: Path, args: tuple[str, ...], module: str, attribute: str, call: int = 1) -> None:
    result = subprocess.run([sys.executable, "-c", KILL_AT, module, attribute, str(call),
                             *args],
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
    for args in (DOWNLOAD, PREPARE, ENTITIES, COUNTERFACTUALS, PRETRAIN, TRAIN):
        stage(root, args)
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
        code = cli.main(list(COUNTERFACTUALS))
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


# ---- a killed Snakemake, resumed with the command the README gives ------------------------

README_COMMAND = "snakemake --workflow-profile workflow/profiles/default"


def test_the_readme_and_make_reproduce_run_the_resuming_command():
    assert f"\n{README_COMMAND} " in (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"$(BIN)/{README_COMMAND}\n" in (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")


def wait_for(condition, what: str, job: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if job.poll() is not None:
            raise AssertionError(f"snakemake ended ({job.returncode}) before {what}:\n{job.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_killed_snakemake_resumes_with_the_readme_command(tmp_path):
    """SIGKILL to Snakemake and its job mid-run (as the OOM killer or a lost machine does) leaves
    Snakemake's locks and an incomplete job; the README's command, run again unchanged, removes
    the dead run's locks, reruns what was cut short and finishes the pipeline. Before, every
    rerun stopped at LockException (and IncompleteFilesException) until --unlock and
    --rerun-incomplete. About 3 minutes on 2 shared cores."""
    root = copy_project(tmp_path)
    values = tiny_params(("lora",))
    values["seeds"] = [0]
    values["train"].update(max_steps=6, eval_every=3)
    (root / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    state = root / ".snakemake"

    # The terminal's SIGINT: this process may hold an ignored one, which children inherit.
    job = subprocess.Popen(README_COMMAND.split(), cwd=root, env=tool_env(), start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Killed while `download` writes data/raw (an output that exists, marked incomplete), or,
        # if that passes unseen, while any later job runs.
        wait_for(lambda: ((root / "data/raw").is_dir() and not (root / "data/raw/manifest.json").exists())
                 or (root / "data/prepared").is_dir(), "the first data job", job)
        wait_for(lambda: any((state / "incomplete").rglob("*")) if (state / "incomplete").is_dir() else False,
                 "a running job", job)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    assert sorted(p.name for p in (state / "locks").iterdir()) == ["0.input.lock", "0.output.lock"]
    assert any(p.is_file() for p in (state / "incomplete").rglob("*"))

    rerun = subprocess.run(README_COMMAND.split(), cwd=root, env=tool_env(), capture_output=True, text=True,
                           timeout=1800)
    assert rerun.returncode == 0, rerun.stderr[-6000:]
    assert "cfqa: removed .snakemake/locks/0.input.lock, the lock of a Snakemake run that is no longer running" \
        in rerun.stderr
    assert "LockException" not in rerun.stderr and "IncompleteFilesException" not in rerun.stderr
    assert (root / "results/summary.json").is_file() and (root / "reports/index.html").is_file()
    assert (root / "data/raw/manifest.json").is_file()
    assert not (state / "locks").exists() or not any((state / "locks").iterdir())
    again = subprocess.run([*README_COMMAND.split(), "-n"], cwd=root, env=tool_env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
