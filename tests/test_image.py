"""The CPU image (containers/Dockerfile.cpu, built by `make image`) runs the pipeline as the
host's environment does: the tiny configuration of the shared stage results (tests/stage_results.py,
run once per test run through the same `cfqa` CLI in .venv), stage by stage inside the image for
full fine-tuning's seed 0, writes sha256-identical data files and bit-identical weights and
predictions (same CPU, same torch build, same thread counts).

Needs podman and buildah (no Docker daemon): `buildah run --isolation chroot` runs commands in
the image with the run's directory bound to /work. Skipped where buildah is missing, except in
CI, where a missing buildah fails (tests/required_tools.py)."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import shutil

import pytest

from pipeline_support import PROJECT, run_tool
from required_tools import require_executable
from stage_results import stage_command

pytestmark = [pytest.mark.slow, pytest.mark.image]

IMAGE = os.environ.get("CFQA_IMAGE", "cfqa-cpu:0.1.0")
require_executable("buildah", "`make image` installs it with podman", module=True)

# download -> prepare -> entities -> counterfactuals -> pretrain -> train -> evaluate, one
# method, one seed, each with the stage table's command line (as both engines build it), train
# at the configured rate on the variants: no fetch, tokenize or tune job, whose outputs the
# shared run has and the image run does not (the rate is the same: tune's one grid point is 1×).
METHOD, SEED = "full", 0
RUN = f"{METHOD}/seed{SEED}"
STAGES = [("download", ("fetched",), {}), ("prepare", (), {}), ("entities", (), {}), ("counterfactuals", (), {}),
          ("pretrain", ("fetched",), {}), ("train", ("tokenized", "lr-selection"), {"method": METHOD, "seed": SEED}),
          ("evaluate", ("tokenized",), {"method": METHOD, "seed": SEED})]
# Outputs that must match byte for byte, every file the image run writes under them. Left out:
# pretrain.timing.json, train.json, train_curve.csv, evaluation_run.json and headline.json hold
# wall times or step times; logs and the MLflow store hold times and run ids.
COMPARED = ["data", "models/base", "models/base_lm", f"models/{RUN}", f"results/{RUN}/predictions.jsonl",
            f"results/{RUN}/metrics.json"]
TIMED = {"pretrain.timing.json"}


def stage_commands() -> list[list[str]]:
    return [["cfqa", "--log-file", f"logs/{stage}.log", *stage_command(stage, Path("params.yaml"), leave_out, **wildcards)]
            for stage, leave_out, wildcards in STAGES]


def digests(root: Path, names: list[str] | None = None) -> dict[str, str]:
    """sha256 of every compared output file under `root` (or of `names`, paths relative to it),
    by path relative to the run directory."""
    files = []
    for name in COMPARED if names is None else names:
        path = root / name
        assert path.exists(), f"{path}: expected output missing"
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.name not in TIMED}


def run(args: list[str], timeout: float = 900) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """The image built from the current checkout: `make image` rebuilds only changed layers."""
    run_tool(["make", "image", f"IMAGE={IMAGE}"], PROJECT, timeout=3600)
    return IMAGE


@pytest.fixture(scope="module")
def container(image):
    name = run(["buildah", "from", "--pull=never", image]).strip()
    yield name
    run(["buildah", "rm", name])


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, container, stage_results) -> Path:
    root = tmp_path_factory.mktemp("image") / "run"
    root.mkdir()
    shutil.copy(stage_results.params, root / "params.yaml")
    # As `docker run -u $(id -u):$(id -g) -v $PWD:/work` does: outputs belong to the caller.
    prefix = ["buildah", "run", "--isolation", "chroot", "--user", f"{os.getuid()}:{os.getgid()}",
              "--volume", f"{root}:/work", "--workingdir", "/work", "--env", "CI=true", container, "--"]
    for command in stage_commands():
        run([*prefix, *command])
    return root


def test_image_runs_as_a_user_on_exactly_the_locked_environment(container):
    user = run(["buildah", "inspect", "--type", "container", "--format", "{{.OCIv1.Config.User}}", container]).strip()
    assert user.split(":")[0] not in {"", "0", "root"}
    check = run(["buildah", "run", "--isolation", "chroot", container, "--",
                 "sh", "/opt/cfqa/check_lock.sh", "/opt/cfqa/requirements.lock", "--exact"])
    assert "pins installed as locked, nothing else" in check
    version = run(["buildah", "run", "--isolation", "chroot", container, "--",
                   "python", "-c", "import sys, torch; print(*sys.version_info[:2], torch.__version__)"])
    assert version.split() == ["3", "11", "2.13.0+cpu"]  # the Python the lock is resolved for


def test_image_run_matches_the_host_run_byte_for_byte(stage_results, image_run):
    inside = digests(image_run)
    assert any(name.startswith("data/variants/") for name in inside)
    assert {"data/stats.json", f"models/{RUN}/trainable.safetensors", "models/base/model.safetensors",
            f"results/{RUN}/predictions.jsonl"} <= set(inside)
    # The host run also holds the jobs the image run leaves out (fetch, tokenize, tune, other runs).
    host = digests(stage_results.root, sorted(inside))
    differing = sorted(name for name in inside if host[name] != inside[name])
    assert not differing, f"image and host outputs differ: {differing}"


def test_image_run_wrote_files_the_caller_owns(image_run):
    owners = {p.stat().st_uid for p in image_run.rglob("*")}
    assert owners == {os.getuid()}
