"""Wall-clock records kept apart from the outputs they describe.

How long a stage took differs on every run; what it wrote does not (the same seed is
bit-identical on one machine). A timing file (`<name>.timing.json`) beside an output holds the
former, so the output's records stay byte-identical across identical runs and every content
hash (cfqa.contract.run_info.directory_sha256, DVC's through .dvcignore) leaves it out.
"""
from __future__ import annotations

from pathlib import Path

from cfqa.io.atomic_io import write_json

TIMING_SUFFIX = ".timing.json"


def is_timing_file(path: Path) -> bool:
    return Path(path).name.endswith(TIMING_SUFFIX)


def write_timing(directory: Path, name: str, wall_time_s: float) -> Path:
    """`<directory>/<name>.timing.json` = {"wall_time_s": ...}, written atomically."""
    path = Path(directory) / f"{name}{TIMING_SUFFIX}"
    write_json(path, {"wall_time_s": wall_time_s})
    return path
