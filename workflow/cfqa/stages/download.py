"""Stage `download`: the raw dataset in NQ simplified format, with a sha256 manifest.

Sources (params `data.source`): `embedded` builds the offline world; `nq` downloads Natural
Questions (simplified train, original-format dev converted); `huggingface` exports the Hugging
Face copy of NQ to the same files.
"""
from __future__ import annotations

from pathlib import Path

from cfqa.config import Config
from cfqa.logs import get_logger
from cfqa.nq.manifest import write_manifest

log = get_logger(__name__)


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
