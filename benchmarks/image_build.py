"""Build time and size of the CPU image (containers/Dockerfile.cpu) as `make image` builds it.

Works on a snapshot of the checkout (the files git would hold, copied into a temporary
directory) so that edits made meanwhile do not change what is measured, and times:
  - base:        containers/make_base.sh, the Debian base made from packages (where no image
                 registry is reachable; `make image` makes it when it is missing);
  - cold:        `make image` with the base present but no image and no cached layer: every
                 Python package downloaded and installed;
  - cached:      `make image` again with nothing changed: every layer from the cache;
  - code_change: `make image` after one line of the package changed: only the layers from
                 the project's COPY on are rebuilt.
It records the image's size, its largest layers and the tools' versions, and writes
benchmarks/results/image_build.json.

With --cuda it times the CUDA image (containers/Dockerfile) as `make image-cuda` builds it:
a cold build (that image removed; the Debian base kept, or made by make where it is missing)
and a cached rebuild, then imports torch, transformers, peft and cfqa inside the image and
runs `cfqa --help` there. It writes the key `cuda` of the same file and keeps the rest; the
CPU measurement keeps an existing `cuda` key in turn. No GPU is needed (nor used): CUDA
execution is not checked.

It removes the image, the local base and the dangling images podman keeps as build cache
before the cold build: run it where nothing else needs them. The image left behind is built
from the snapshot with the changed line; `make image` in the checkout rebuilds the project's
layers from the cache.

    .venv/bin/python benchmarks/image_build.py [--image cfqa-cpu:0.1.0]
    .venv/bin/python benchmarks/image_build.py --cuda [--image cfqa-cuda:0.1.0]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from cfqa.io.atomic_io import write_json

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "benchmarks" / "results" / "image_build.json"
LOCAL_BASE = "localhost/cfqa-base:bookworm"  # the Makefile's IMAGE_LOCAL_BASE


def run(args: list[str], cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.monotonic()
    result = run(args, cwd)
    return round(time.monotonic() - start, 1), result.stdout + result.stderr


def snapshot(destination: Path) -> None:
    """The files git would commit (tracked and untracked, not ignored), as they are now."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], PROJECT).stdout
    for name in filter(None, listed.split("\0")):
        source = PROJECT / name
        if source.is_file():  # deleted but still tracked: skipped
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def image_exists(image: str) -> bool:
    return run(["podman", "image", "exists", image], check=False).returncode == 0


def remove_image_and_cache(image: str) -> None:
    for name in (image, LOCAL_BASE):
        if image_exists(name):
            run(["podman", "rmi", "--force", name])
        # The build's intermediate layers are untagged once the image is gone.
        run(["podman", "image", "prune", "--force"])


def image_facts(image: str) -> dict:
    inspect = json.loads(run(["podman", "image", "inspect", image]).stdout)[0]
    history = json.loads(run(["podman", "history", "--format", "json", image]).stdout)
    # CreatedBy of a RUN starts with the build arguments; the command follows the shell's -c.
    commands = (re.split(r"/bin/(?:ba)?sh (?:-o pipefail )?-c ", h["CreatedBy"], maxsplit=1)[-1] for h in history)
    commands = (re.sub(r"--mount=\S+\s+", "", c) for c in commands)
    layers = sorted(({"bytes": h["size"], "created_by": " ".join(c.split())[:160]}
                     for h, c in zip(history, commands) if h["size"]), key=lambda h: -h["bytes"])
    labels = inspect.get("Labels") or inspect["Config"].get("Labels") or {}
    return {"size_bytes": inspect["Size"], "size_gb": round(inspect["Size"] / 1e9, 2),
            "layers_by_size": layers[:6], "base": labels.get("org.opencontainers.image.base.name"),
            "user": inspect["Config"].get("User")}


def rebuilt_steps(log: str) -> list[str]:
    """The Dockerfile steps a `podman build --layers` log shows as run rather than cached."""
    steps = re.split(r"(?m)^(STEP \d+/\d+: .*)$", log)[1:]
    return [head[:80] for head, body in zip(steps[::2], steps[1::2])
            if "Using cache" not in body and ": FROM " not in head]  # FROM never says so


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def inside(image: str, *command: str) -> str:
    container = run(["buildah", "from", "--pull=never", image]).stdout.strip()
    try:
        return run(["buildah", "run", "--isolation", "chroot", container, "--", *command]).stdout.strip()
    finally:
        run(["buildah", "rm", container])


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "podman": run(["podman", "--version"]).stdout.strip(),
        "buildah": run(["buildah", "--version"]).stdout.strip(),
        "python_host": sys.version.split()[0],
    }


def previous_results() -> dict:
    return json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}


def measure_cuda(image: str) -> None:
    make = ["make", "image-cuda", f"IMAGE_CUDA={image}"]
    with tempfile.TemporaryDirectory(prefix="cfqa-image-cuda-") as tmp:
        context = Path(tmp)
        snapshot(context)
        run(make[:2] + ["--dry-run"], context)  # fails early on a broken Makefile
        if image_exists(image):
            run(["podman", "rmi", "--force", image])
        base_present = image_exists(LOCAL_BASE)
        cold_s, cold_log = timed(make, context)
        cached_s, cached_log = timed(make, context)

    facts = image_facts(image)
    imports = inside(image, "python", "-c",
                     "import sys, torch, transformers, peft, cfqa; "
                     "print('%d.%d.%d' % sys.version_info[:3], torch.__version__, torch.version.cuda, "
                     "transformers.__version__, peft.__version__)").split()
    help_text = inside(image, "cfqa", "--help")
    result = {
        "image": image,
        "dockerfile": "containers/Dockerfile",
        "command": " ".join(make),
        "image_size_bytes": facts["size_bytes"],
        "image_size_gb": facts["size_gb"],
        "largest_layers": facts["layers_by_size"],
        "base_image": facts["base"],
        "base_image_present_before": base_present,
        "user": facts["user"],
        "python_in_image": imports[0],
        "torch_in_image": imports[1],
        "torch_cuda_in_image": imports[2],
        "transformers_in_image": imports[3],
        "peft_in_image": imports[4],
        "cfqa_help_first_line": help_text.splitlines()[0] if help_text else "",
        "cuda_execution_checked": False,  # no GPU where this runs: imports and CLI only
        "fallbacks": {
            "local_base_no_registry": "no image registry" in cold_log,
            "torch_from_pypi": "no PyTorch index" in cold_log,
            "spacy_model_skipped": "out of reach" in cold_log,
        },
        "seconds": {"cold_build": cold_s, "cached_rebuild": cached_s},
        "steps_run": {"cold_build": len(rebuilt_steps(cold_log)), "cached_rebuild": rebuilt_steps(cached_log)},
        "machine": machine(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(RESULTS, {**previous_results(), "cuda": result})
    print(json.dumps(result["seconds"], indent=2), result["image_size_gb"], "GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", help="default: cfqa-cpu:0.1.0, with --cuda cfqa-cuda:0.1.0")
    parser.add_argument("--cuda", action="store_true", help="the CUDA image (`make image-cuda`) instead")
    args = parser.parse_args()
    if args.cuda:
        measure_cuda(args.image or "cfqa-cuda:0.1.0")
        return
    args.image = args.image or "cfqa-cpu:0.1.0"
    make = ["make", "image", f"IMAGE={args.image}"]

    with tempfile.TemporaryDirectory(prefix="cfqa-image-") as tmp:
        context = Path(tmp)
        snapshot(context)
        run(make[:2] + ["--dry-run"], context)  # fails early on a broken Makefile
        remove_image_and_cache(args.image)
        base_s, _ = timed(["sh", "containers/make_base.sh", LOCAL_BASE], context)
        base_bytes = int(run(["podman", "image", "inspect", "--format", "{{.Size}}", LOCAL_BASE]).stdout)
        cold_s, cold_log = timed(make, context)
        cached_s, cached_log = timed(make, context)
        with (context / "workflow/cfqa/__init__.py").open("a") as handle:
            handle.write("# changed to time a rebuild\n")
        code_change_s, code_change_log = timed(make, context)

    facts = image_facts(args.image)
    versions = inside(args.image, "python", "-c",
                      "import sys, torch; print('%d.%d.%d' % sys.version_info[:3], torch.__version__)").split()
    result = {
        "image": args.image,
        "dockerfile": "containers/Dockerfile.cpu",
        "command": " ".join(make),
        "image_size_bytes": facts["size_bytes"],
        "image_size_gb": facts["size_gb"],
        "largest_layers": facts["layers_by_size"],
        "base_image": facts["base"],
        "base_image_size_bytes": base_bytes,
        "user": facts["user"],
        "python_in_image": versions[0],
        "torch_in_image": versions[1],
        "fallbacks": {
            "local_base_no_registry": "no image registry" in cold_log,
            "torch_from_local_wheel": "no PyTorch index" in cold_log,
            "spacy_model_skipped": "out of reach" in cold_log,
        },
        "seconds": {
            "base_from_debian_packages": base_s,
            "cold_build": cold_s,
            "cold_total_with_base": round(base_s + cold_s, 1),
            "cached_rebuild": cached_s,
            "rebuild_after_code_change": code_change_s,
        },
        "steps_run": {
            "cold_build": len(rebuilt_steps(cold_log)),
            "cached_rebuild": rebuilt_steps(cached_log),
            "rebuild_after_code_change": rebuilt_steps(code_change_log),
        },
        "machine": machine(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    cuda = previous_results().get("cuda")
    write_json(RESULTS, {**result, **({"cuda": cuda} if cuda else {})})
    print(json.dumps(result["seconds"], indent=2), result["image_size_gb"], "GB")


if __name__ == "__main__":
    main()
