"""Stage `download`: the raw dataset in NQ simplified format, with a sha256 manifest.

Sources (params `data.source`): `embedded` builds the offline world; `nq` downloads Natural
Questions (simplified train, original-format dev converted); `huggingface` exports the Hugging
Face copy of NQ to the same files.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from cfqa.atomic_io import write_json
from cfqa.config import Config
from cfqa.logs import get_logger

log = get_logger(__name__)
MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(raw_dir: Path, source: str) -> dict:
    files = {
        path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(raw_dir.iterdir())
        if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
    }
    manifest = {"source": source, "files": files}
    write_json(raw_dir / MANIFEST, manifest)
    return manifest


def run(cfg: Config, out: Path) -> None:
    source = cfg.data.source
    if source == "embedded":
        from cfqa.world.build import write_world
        write_world(cfg.data.embedded, out)
    elif source == "nq":
        from cfqa.nq.download import download_nq
        download_nq(cfg.data.nq, out)
    elif source == "huggingface":
        from cfqa.nq.huggingface import export_huggingface
        export_huggingface(cfg.data.huggingface, out)
    else:  # the schema already rejects this; kept for a clear message if called directly
        raise ValueError(f"data.source must be embedded, nq or huggingface, got {source!r}")
    manifest = write_manifest(out, source)
    for name, entry in manifest["files"].items():
        log.info("wrote %s (%d bytes, sha256 %s)", out / name, entry["bytes"], entry["sha256"][:12])
