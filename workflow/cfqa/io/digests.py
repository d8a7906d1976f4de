"""The sha256 of a file, read in chunks, with a progress bar past a few hundred megabytes
(NQ train is 4.4 GB, a T5-large checkpoint 3 GB: hashing takes a while)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from cfqa.io.progress import progress

_CHUNK_BYTES = 1 << 20
_SHOW_PROGRESS_FROM_BYTES = 256 << 20


def sha256_file(path: str | Path) -> str:
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    bar = (progress(desc=f"sha256 {path.name}", total=size, unit="B", unit_scale=True, unit_divisor=1024)
           if size >= _SHOW_PROGRESS_FROM_BYTES else None)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return digest.hexdigest()
