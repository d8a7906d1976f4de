"""The raw data's manifest: the size and sha256 of every file `cfqa download` wrote, written
after them, and checked by `prepare` against what it reads.

A raw file damaged after download is found by the readers when its gzip stream or a record
breaks, but not when it is cut exactly where one gzip member ends (a valid, shorter stream:
671 of 1,000 records read, and an exit status 0) or when a record is changed into another
valid one. The manifest finds both: its size is checked before a file is read, and its sha256
over the bytes as they are read (no second pass over a 4 GB file).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from cfqa.io.atomic_io import FileFormatError, read_json, write_json
from cfqa.nq.errors import ManifestMismatch

MANIFEST = "manifest.json"
_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(raw_dir: Path, source: str) -> dict:
    """manifest.json in `raw_dir`: {"source", "files": {name: {"sha256", "bytes"}}} for every file."""
    raw_dir = Path(raw_dir)
    files = {
        path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(raw_dir.iterdir())
        if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
    }
    manifest = {"source": source, "files": files}
    write_json(raw_dir / MANIFEST, manifest)
    return manifest


def manifest_entry(raw_dir: Path, name: str) -> dict:
    """The manifest's {"sha256", "bytes"} of file `name`; ManifestMismatch when there is none."""
    path = Path(raw_dir) / MANIFEST
    if not path.is_file():
        raise ManifestMismatch(path, "missing: `cfqa download` writes it after the raw files, so a raw folder "
                                     "without it is incomplete or not download's; run download again")
    try:
        entry = read_json(path)["files"][name]
        if not (isinstance(entry["sha256"], str) and isinstance(entry["bytes"], int)):
            raise TypeError
    except (FileFormatError, KeyError, TypeError) as error:
        raise ManifestMismatch(path, f"expected a sha256 and a size for {name} ({type(error).__name__}: "
                                     f"{error}); run download again") from error
    return entry


def check_size(path: Path, entry: dict) -> None:
    """ManifestMismatch when `path` is not the size the manifest recorded."""
    size = Path(path).stat().st_size
    if size != entry["bytes"]:
        raise ManifestMismatch(path, f"{size:,} bytes, but manifest.json records {entry['bytes']:,}: the file "
                                     f"{'was cut short' if size < entry['bytes'] else 'grew'} after download wrote "
                                     "it; download it again")


def sha256_mismatch(path: Path, entry: dict, sha256: str) -> ManifestMismatch | None:
    """The error to raise when `sha256` (of what was read) is not the manifest's, else None."""
    if sha256 == entry["sha256"]:
        return None
    return ManifestMismatch(path, f"sha256 {sha256[:16]}… of what was read, but manifest.json records "
                                  f"{entry['sha256'][:16]}…: the file changed after download wrote it; "
                                  "download it again")
