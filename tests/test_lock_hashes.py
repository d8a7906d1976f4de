"""The locks are hash-pinned, and every install of them checks the hashes: requirements.lock
(the project and its tests), requirements-build.lock (setuptools, which builds the pins that
have no wheel) and requirements-executors.lock (the cluster executor plugins on top: what
`make install` puts in the checkout's venv). Static checks of the files; the real install runs
in every `make install`."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline_support import PROJECT

LOCKS = {name: PROJECT / name for name in
         ("requirements.lock", "requirements-build.lock", "requirements-executors.lock")}
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def entries(lock: Path) -> dict[str, tuple[Requirement, list[str], int]]:
    """name -> (requirement, its sha256 hashes, line number), from pip's requirements format:
    continuation lines joined, comments dropped. Raises on any other option or a name twice."""
    result, logical, start = {}, "", 0
    lines = lock.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].rstrip() if not line.lstrip().startswith("--hash") else line.rstrip()
        if not logical:
            start = number
        if text.endswith("\\"):
            logical += text[:-1] + " "
            continue
        logical += text
        if logical.strip():
            # Extras may hold a space (`fsspec[http, tqdm]==...`): options start at " --".
            requirement_text, _, rest = logical.strip().partition(" --")
            options = ("--" + rest).split() if rest else []
            hashes = [o for o in options if HASH.fullmatch(o)]
            assert len(hashes) == len(options), f"{lock.name}:{start}: expected only --hash=sha256:<64 hex> options"
            requirement = Requirement(requirement_text)
            name = canonicalize_name(requirement.name)
            assert name not in result, f"{lock.name}:{start}: {name} is locked twice"
            result[name] = (requirement, hashes, start)
        logical = ""
    return result


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_pin_is_exact_and_hashed(lock):
    locked = entries(LOCKS[lock])
    assert locked
    for name, (requirement, hashes, line) in locked.items():
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version, \
            f"{lock}:{line}: {name} must be pinned with == to one version, not {requirement.specifier}"
        assert hashes, f"{lock}:{line}: {name} has no --hash=sha256:..."
        assert requirement.url is None and requirement.marker is None, f"{lock}:{line}: {name}"


def test_entries_reject_an_unpinned_or_unhashed_line(tmp_path):
    bad = tmp_path / "bad.lock"
    bad.write_text("numpy==2.4.6 \\\n    --hash=sha256:" + "0" * 64 + "\nscipy>=1.0\n")
    locked = entries(bad)
    assert locked["numpy"][1] == ["--hash=sha256:" + "0" * 64]
    assert str(locked["scipy"][0].specifier) == ">=1.0" and locked["scipy"][1] == []
    bad.write_text("numpy==2.4.6 --hash=md5:abc\n")
    with pytest.raises(AssertionError, match="bad.lock:1"):
        entries(bad)


def test_torch_is_the_cpu_build_and_no_cuda_package_is_locked():
    locked = entries(LOCKS["requirements.lock"])
    torch_version = str(next(iter(locked["torch"][0].specifier)).version)
    assert torch_version.endswith("+cpu"), torch_version
    cuda = [n for n in locked if n.startswith("nvidia-") or n == "triton"]
    assert not cuda, f"requirements.lock holds CUDA packages {cuda}: torch was resolved from PyPI, not its CPU wheel"


def local_torch_wheels() -> list[Path]:
    """torch's CPU wheels this machine's pip finds (find-links) or `make image` put in containers/wheels."""
    config = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                            capture_output=True, text=True).stdout.split()
    folders = [Path(f) for f in config if Path(f).is_dir()] + [PROJECT / "containers" / "wheels"]
    return [w for folder in folders for w in folder.glob("torch-*+cpu-cp311-*.whl")]


def test_torch_hash_is_that_of_the_cpu_wheel_pip_installs_here():
    requirement, hashes, _ = entries(LOCKS["requirements.lock"])["torch"]
    version = next(iter(requirement.specifier)).version
    wheels = [w for w in local_torch_wheels() if w.name.startswith(f"torch-{version}-")]
    if not wheels:
        pytest.skip(f"no local CPU wheel of torch {version} (pip's find-links or containers/wheels)")
    for wheel in wheels:
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert f"--hash=sha256:{digest}" in hashes, f"{wheel}: its sha256 is not among the lock's torch hashes"


def test_build_and_executor_locks_agree_with_the_main_lock():
    main = entries(LOCKS["requirements.lock"])
    for lock in ("requirements-build.lock", "requirements-executors.lock"):
        for name, (requirement, hashes, line) in entries(LOCKS[lock]).items():
            if name in main:
                assert str(requirement.specifier) == str(main[name][0].specifier), \
                    f"{lock}:{line}: {name}{requirement.specifier}, requirements.lock has {main[name][0].specifier}"
                assert set(hashes) == set(main[name][1]), f"{lock}:{line}: {name}: other hashes than requirements.lock"
    assert set(entries(LOCKS["requirements-build.lock"])) == {"setuptools"}
    assert set(main) <= set(entries(LOCKS["requirements-executors.lock"]))  # a superset: it installs on top


def test_extras_are_locked_at_their_pins():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    assert {"slurm", "kubernetes", "test"} <= set(extras)
    executors = entries(LOCKS["requirements-executors.lock"])
    main = entries(LOCKS["requirements.lock"])
    for extra, requirements in extras.items():
        lock = main if extra == "test" else executors
        for text in requirements:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            assert name in lock, f"pyproject.toml: extra {extra!r} needs {name}, which its lock lacks"
            locked_version = next(iter(lock[name][0].specifier)).version
            assert requirement.specifier.contains(locked_version), f"{extra}: {text} vs locked {locked_version}"
    assert "snakemake-executor-plugin-slurm" in executors and "snakemake-executor-plugin-kubernetes" in executors
    # The plugins must fit the snakemake that requirements.lock pins (the executors lock is
    # compiled with it as constraint, so its snakemake is that one).
    assert executors["snakemake"][0].specifier == main["snakemake"][0].specifier


def makefile_recipe(target: str) -> list[str]:
    text = (PROJECT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    body = re.search(rf"(?m)^{re.escape(target)}:.*\n((?:\t.*\n?)+)", text)
    assert body, f"Makefile: no recipe for {target}"
    return body[1].splitlines()


def test_make_install_checks_every_hash():
    """The checkout's venv: setuptools first, then the executors lock (a superset of
    requirements.lock, checked above), each with --require-hashes, then cfqa itself."""
    pip_lines = [line for line in makefile_recipe("$(STAMP)") if "pip install" in line]
    installed = [line for line in pip_lines if " -r " in line]
    assert [re.search(r" -r (\S+)", line)[1] for line in installed] == \
        ["requirements-build.lock", "requirements-executors.lock"], pip_lines
    assert all("--require-hashes" in line for line in installed), installed
    # Nothing else from an index: only the project itself, from this checkout, without deps.
    others = [line for line in pip_lines if line not in installed]
    assert all(line.split("pip install", 1)[1].split()[-2:] == ["-e", "."] and "--no-deps" in line
               for line in others), others
    # Wheel-less pins are built by the hashed setuptools, not one an isolated build fetches.
    assert all("--no-build-isolation" in line for line in installed if "requirements-build" not in line)


def test_the_venv_is_rebuilt_when_a_lock_or_the_recipe_changes():
    text = (PROJECT / "Makefile").read_text(encoding="utf-8")
    prerequisites = re.search(r"(?m)^\$\(STAMP\):(.*)$", text)[1].split()
    assert set(LOCKS) | {"pyproject.toml", "Makefile"} <= set(prerequisites), prerequisites


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile"])
def test_images_install_the_locks_with_hash_checking(dockerfile):
    text = (PROJECT / "containers" / dockerfile).read_text(encoding="utf-8").replace("\\\n", " ")
    installs = re.findall(r"pip install ([^&;]*?-r \S+)", text)
    assert any("requirements-build.lock" in i for i in installs)
    assert any("requirements.lock" in i or "requirements-without-torch" in i for i in installs)
    assert all("--require-hashes" in i for i in installs), installs
