"""What makes a result self-describing: the code (git commit, dirty tree, package versions, the
hash of the package that actually ran),
the machine (CPU model, threads, kernel capability, BLAS, GPU), the params slice and the
hashes of the data and backbone a stage read.

The same seed gives bit-identical results on one machine and different ones across CPUs
(BLAS kernels differ), so results must say which machine produced them.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any, Iterable

from cfqa.contract.records import Hardware, RunInfo
from cfqa.io.timing_files import is_timing_file

VERSIONED_PACKAGES = ("cfqa", "torch", "transformers", "peft", "accelerate")
_HASH_CHUNK_BYTES = 1 << 20
# The package this module belongs to, as imported: the checkout's workflow/cfqa, or the copy an
# image installed when the checkout is not on the path.
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _git(args: list[str], cwd: Path | None) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's commit hash, or "unknown" outside a git checkout or without git."""
    done = _git(["rev-parse", "HEAD"], cwd)
    commit = done.stdout.strip() if done is not None and done.returncode == 0 else ""
    return commit or "unknown"


def git_dirty(cwd: Path | None = None) -> bool | None:
    """True when tracked files differ from HEAD; None outside a checkout. Read-only: without
    --no-optional-locks, `git status` refreshes .git/index, so jobs running together would race
    for its lock and write into the user's repository."""
    done = _git(["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"], cwd)
    if done is None or done.returncode != 0:
        return None
    return bool(done.stdout.strip())


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware(device: str) -> Hardware:
    import torch

    blas = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") and torch.cuda.is_available() else None
    return Hardware(device=device, cpu_model=cpu_model(), cpu_count=os.cpu_count() or 0,
                    torch_threads=torch.get_num_threads(),
                    cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    blas=blas.group(1) if blas else "unknown", gpu=gpu)


def files_sha256(paths: Iterable[Path]) -> str:
    """One hash over the names and bytes of `paths`, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def directory_sha256(directory: Path) -> str:
    """The hash of the content under `directory`: every file by relative path in sorted order,
    timing files (cfqa.io.timing_files) left out, so two identical backbones hash alike whenever
    they were made."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and not is_timing_file(p))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(files_sha256([path]).encode())
    return digest.hexdigest()


def package_sha256(package_dir: Path) -> str:
    """The hash of a cfqa package: every file under `package_dir` (bytecode caches aside) and
    the params schema beside it (../schemas), by path relative to its parent (workflow/)."""
    schema = package_dir.parent / "schemas" / "params.schema.yaml"
    files = [p for p in package_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    files += [schema] if schema.is_file() else []
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(package_dir.parent).as_posix()):
        digest.update(path.relative_to(package_dir.parent).as_posix().encode() + b"\0")
        digest.update(files_sha256([path]).encode())
    return digest.hexdigest()


@functools.cache
def code_sha256() -> str:
    """The hash of the code that runs (package_sha256 of the imported package). The git commit
    describes the checkout; this describes what ran, so results of a stale image are told apart."""
    return package_sha256(PACKAGE_DIR)


def run_info(stage: str, status: str, params: dict[str, Any], device: str, *,
             data_sha256: str | None = None, backbone_sha256: str | None = None,
             backbone_source: dict[str, Any] | None = None) -> RunInfo:
    """`backbone_source`: the hub commit and files of the backbone (cfqa.model.hub.read_source_record)."""
    return RunInfo(stage=stage, status=status, git_commit=git_commit(), git_dirty=git_dirty(),
                   versions=package_versions(), hardware=hardware(device), params=params,
                   data_sha256=data_sha256, backbone_sha256=backbone_sha256,
                   code_sha256=code_sha256(), code_path=str(PACKAGE_DIR),
                   backbone_source=backbone_source)
