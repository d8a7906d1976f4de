"""A full disk while a stage writes leaves no partial output: the stage fails with one line
naming the file it was writing and ENOSPC, every output is either absent or exactly what an
uninterrupted run writes, no temporary file or lock is left, and a rerun with space writes
byte-identical outputs.

Each stage runs through the `cfqa` entry point (`cli.main`, its stderr captured: exit status and
lines as a `cfqa` process gives them; in this process, as tests/test_kill.py reruns, to spare
each run the seconds of importing torch and transformers) in a project directory that is a
tmpfs mounted for the test, its size set so the disk fills at a chosen point (sizes counted in
the filesystem's pages from an uninterrupted run's files). The tracking store and the log file
live outside the small disk, so the point where it fills depends on the stage's outputs alone."""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest
import yaml

import cfqa.stages.train as train_stage
from cfqa import cli
from required_tools import missing
from stage_results import stage_command, tiny_params, working_directory
from test_kill import COUNTERFACTUALS, DOWNLOAD, ENTITIES, PARAMS, PREPARE, PRETRAIN, TRAIN, debris, files, stage

pytestmark = pytest.mark.slow

REPORT = tuple(stage_command("report", PARAMS, ("headline",)))
EVALUATE = tuple(stage_command("evaluate", PARAMS, ("tokenized",), method="lora", seed=0))
ROOMY = 256 * 2**20       # a size no stage of the tiny configuration comes near


def _mount(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def _unmount(where: Path) -> None:
    if _mount(["umount", str(where)]).returncode != 0:
        _mount(["umount", "--lazy", str(where)])       # a process still holds a file: detach


@pytest.fixture(scope="module")
def can_mount(tmp_path_factory) -> None:
    """Skips unless this machine lets the tests mount a tmpfs: root with CAP_SYS_ADMIN, as
    the project's CI machine runs them; an unprivileged user or container skips."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        missing("full-disk tests mount a tmpfs: `mount`/`umount` are not installed")
    probe = tmp_path_factory.mktemp("mount-probe")
    result = _mount(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)])
    if result.returncode != 0:
        missing(f"full-disk tests mount a tmpfs, which this machine refuses (uid {os.geteuid()}): "
                f"{result.stderr.strip() or result.returncode}")
    _unmount(probe)


class SmallDisk:
    """A tmpfs at `root`; `fill_after(n)` leaves room for n more pages, `grow()` makes room."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir()
        result = _mount(["mount", "-t", "tmpfs", "-o", f"size={ROOMY},mode=0755", "tmpfs", str(root)])
        assert result.returncode == 0, result.stderr
        self.page = os.statvfs(root).f_bsize

    def used(self) -> int:
        stats = os.statvfs(self.root)
        return (stats.f_blocks - stats.f_bfree) * stats.f_frsize

    def pages(self, *paths: Path) -> int:
        """Pages the files under `paths` take on this filesystem (directories take none on tmpfs)."""
        found = [p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()]
        return sum(math.ceil(p.stat().st_size / self.page) for p in found)

    def _resize(self, size: int) -> None:
        result = _mount(["mount", "-o", f"remount,size={size}", str(self.root)])
        assert result.returncode == 0, result.stderr

    def fill_after(self, pages: int) -> None:
        self._resize(self.used() + pages * self.page)

    def grow(self) -> None:
        self._resize(ROOMY)

    def unmount(self) -> None:
        _unmount(self.root)


@pytest.fixture
def disk(can_mount, tmp_path):
    small = SmallDisk(tmp_path / "disk")
    try:
        yield small
    finally:
        small.unmount()


@pytest.fixture(scope="module")
def reference(can_mount, tmp_path_factory) -> Path:
    """An uninterrupted run of every stage, on an ordinary disk; the last train run's checkpoint
    is kept in `checkpoint/` (the stage removes it) so its size is known."""
    root = tmp_path_factory.mktemp("uninterrupted")
    values = tiny_params(("lora",))
    values["seeds"] = [0]
    values["train"].update(max_steps=6, eval_every=3)     # checkpoints at steps 3 and 6
    values["tracking"]["uri"] = f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"
    (root / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    for args in (DOWNLOAD, PREPARE, ENTITIES, COUNTERFACTUALS, PRETRAIN):
        stage(root, args)

    def keep_a_copy(directory: Path) -> None:
        shutil.copytree(directory, root / "checkpoint")
        shutil.rmtree(directory)
    with mock.patch.object(train_stage, "remove_checkpoint", keep_a_copy):
        stage(root, TRAIN)
    stage(root, EVALUATE)
    stage(root, REPORT)
    return root


def on_disk(reference: Path, disk: SmallDisk, *inputs: str) -> Path:
    shutil.copy(reference / "params.yaml", disk.root / "params.yaml")
    for path in inputs:
        if (reference / path).is_dir():
            shutil.copytree(reference / path, disk.root / path)
        else:
            (disk.root / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(reference / path, disk.root / path)
    return disk.root


def run_stage(root: Path, args: tuple[str, ...], log: Path, capfd: pytest.CaptureFixture) -> subprocess.CompletedProcess:
    capfd.readouterr()
    with working_directory(root):
        code = cli.main(["--log-file", str(log), *args])
    captured = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def outputs_under(root: Path, outputs: tuple[str, ...]) -> dict[str, bytes]:
    """Every file of the stage's outputs (files or directories), by path under root."""
    found: dict[str, bytes] = {}
    for output in outputs:
        path = root / output
        if path.is_dir():
            found.update({f"{output}/{name}": data for name, data in files(path).items()})
        elif path.exists():
            found[output] = path.read_bytes()
    return found


def fails_for_lack_of_space(result: subprocess.CompletedProcess, command: str, root: Path,
                            outputs: tuple[str, ...], reference: Path, naming: str) -> str:
    """The stage failed with one line naming ENOSPC and `naming` (a path under root, or a file
    under that directory); what it left of its outputs is complete (the reference's bytes),
    and nothing temporary. Returns the path the line names."""
    assert result.returncode == 1, result.stderr[-3000:]
    left = outputs_under(root, outputs)
    complete = outputs_under(reference, outputs)
    assert set(left) <= set(complete), sorted(set(left) - set(complete))
    assert {name for name, data in left.items() if data != complete[name]} == set()
    assert debris(root) == []

    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    line = re.search(rf"cfqa {command} failed: NoSpaceError: (\S+): no space left on device \(ENOSPC\) "
                     r"while writing it; the partial write was removed", errors[0])
    assert line is not None, errors[0]
    named = line.group(1)
    assert named == naming or named.startswith(f"{naming}/"), (named, naming)
    return named


def reruns_to_the_same_outputs(disk: SmallDisk, args: tuple[str, ...], outputs: tuple[str, ...],
                               reference: Path, log: Path, capfd: pytest.CaptureFixture,
                               compare: tuple[str, ...] | None = None) -> str:
    disk.grow()
    result = run_stage(disk.root, args, log, capfd)
    assert result.returncode == 0, result.stderr[-3000:]
    left, complete = outputs_under(disk.root, outputs), outputs_under(reference, outputs)
    assert set(left) == set(complete)
    for name in compare if compare is not None else complete:
        assert left[name] == complete[name], name
    assert debris(disk.root) == []
    return log.read_text(encoding="utf-8")


CF_OUTPUTS = ("data/variants", "data/stats.json")


@pytest.mark.parametrize("where", ["locks", "variants", "stats"])
def test_counterfactuals_on_a_full_disk(reference, disk, tmp_path, capfd, where):
    root = on_disk(reference, disk, "data/prepared", "data/entities")
    variants = disk.pages(reference / "data/variants")
    locks = 2                                       # .variants.lock, .stats.json.lock: a page each
    # Nothing left; full half-way through the variants; full once the variants are committed.
    room = {"locks": 0, "variants": locks + variants // 2, "stats": locks + variants}[where]
    disk.fill_after(room)
    result = run_stage(root, COUNTERFACTUALS, tmp_path / "failed.log", capfd)
    naming = {"locks": "data/.stats.json.lock", "variants": "data/variants", "stats": "data/stats.json"}[where]
    named = fails_for_lack_of_space(result, "counterfactuals", root, CF_OUTPUTS, reference, naming)
    if where == "variants":
        assert named.endswith(".jsonl")                 # the file, not its temporary directory
        assert not (root / "data/variants").exists() and not (root / "data/stats.json").exists()
    if where == "stats":
        # Variants without their statistics: the rerun treats them as unfinished and rewrites both.
        assert (root / "data/variants").is_dir() and not (root / "data/stats.json").exists()
    reruns_to_the_same_outputs(disk, COUNTERFACTUALS, CF_OUTPUTS, reference, tmp_path / "rerun.log", capfd)


TRAIN_OUTPUTS = ("models/lora/seed0", "results/lora/seed0/train.json", "results/lora/seed0/train_curve.csv")
TRAIN_SAME = ("models/lora/seed0/trainable.safetensors", "results/lora/seed0/train_curve.csv")


@pytest.mark.parametrize("where", ["first checkpoint", "second checkpoint"])
def test_train_on_a_full_disk(reference, disk, tmp_path, capfd, where):
    root = on_disk(reference, disk, "data/variants", "models/base", "models/base_lm")
    checkpoint = reference / "checkpoint"
    weights = disk.pages(checkpoint / "trainable.safetensors")
    locks = 2                                       # models/lora/.seed0.lock, results/lora/.seed0.lock
    # Full in the first checkpoint's optimizer state (no checkpoint yet: the rerun starts over),
    # or in the second checkpoint's weights (the first survives: the rerun resumes from it).
    room = {"first checkpoint": locks + weights + 1,
            "second checkpoint": locks + disk.pages(checkpoint) + weights // 2}[where]
    disk.fill_after(room)
    result = run_stage(root, TRAIN, tmp_path / "failed.log", capfd)
    fails_for_lack_of_space(result, "train", root, TRAIN_OUTPUTS, reference, "models/.checkpoints/lora/seed0")
    assert not (root / "models/lora/seed0").exists() and not (root / "results/lora/seed0").exists()
    kept = root / "models/.checkpoints/lora/seed0/state.json"
    assert kept.is_file() == (where == "second checkpoint")      # the step-3 checkpoint survives

    log = reruns_to_the_same_outputs(disk, TRAIN, TRAIN_OUTPUTS, reference, tmp_path / "rerun.log", capfd, TRAIN_SAME)
    assert ("resuming from models/.checkpoints/lora/seed0 at step 3" in log) == (where == "second checkpoint")
    assert not (root / "models/.checkpoints/lora/seed0").exists()


REPORT_OUTPUTS = ("reports", "results/summary.json")


def test_report_on_a_full_disk(reference, disk, tmp_path, capfd):
    root = on_disk(reference, disk, "results/lora", "data/stats.json")
    written = disk.pages(reference / "reports", reference / "results/summary.json")
    locks = 2                                       # .reports.lock, results/.summary.json.lock
    disk.fill_after(locks + written // 2)
    result = run_stage(root, REPORT, tmp_path / "failed.log", capfd)
    named = fails_for_lack_of_space(result, "report", root, REPORT_OUTPUTS, reference, "reports")
    assert not (root / named).exists()
    assert 0 < len(outputs_under(root, REPORT_OUTPUTS)) < len(outputs_under(reference, REPORT_OUTPUTS))
    reruns_to_the_same_outputs(disk, REPORT, REPORT_OUTPUTS, reference, tmp_path / "rerun.log", capfd)
