"""Stage `download`: the raw dataset in NQ simplified format, with a sha256 manifest.

Sources (params `data.source`): `embedded` builds the offline world; `nq` places Natural
Questions (simplified train, original-format dev converted) from the files `cfqa fetch` put in
the run's cache, checked against their pinned sha256; `huggingface` places the Hugging Face
copy of NQ that fetch exported there. This stage reads no network.
"""
from __future__ import annotations

from pathlib import Path

from cfqa.config import Config
from cfqa.io.logs import get_logger
from cfqa.nq.manifest import write_manifest

log = get_logger(__name__)


def run(cfg: Config, out: Path, cache: Path) -> None:
    source = cfg.data.source
    if source == "embedded":
        from cfqa.world.build import write_world
        write_world(cfg.data.embedded, out)
    elif source == "nq":
        from cfqa.nq.download import NQ_CACHE, download_nq
        download_nq(cfg.data.nq, out, cache_dir=cache / NQ_CACHE)
    elif source == "huggingface":
        from cfqa.nq.download import place
        from cfqa.nq.huggingface import HUGGINGFACE_CACHE, SPLIT_FILES
        out.mkdir(parents=True, exist_ok=True)
        for name in SPLIT_FILES.values():
            exported = cache / HUGGINGFACE_CACHE / name
            if not exported.is_file():
                raise FileNotFoundError(f"{exported}: not exported; run `cfqa fetch` where the network is")
            place(exported, out / name)
    else:  # the schema already rejects this; kept for a clear message if called directly
        raise ValueError(f"data.source must be embedded, nq or huggingface, got {source!r}")
    manifest = write_manifest(out, source)
    for name, entry in manifest["files"].items():
        log.info("wrote %s (%d bytes, sha256 %s)", out / name, entry["bytes"], entry["sha256"][:12])
