"""Natural Questions from its official URLs → raw_dir/{train,dev}.jsonl.gz (simplified format).

Train is published in the simplified format and is placed as is. Dev is published only in the
original format (nq-dev-0[0-4].jsonl.gz) and is converted here. Downloads live in a cache
directory beside raw_dir (default `<raw_dir>/../downloads`), so an interrupted run resumes
and a rerun does not fetch 5 GB again; raw_dir receives hard links (or copies) of them.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import requests

from cfqa.atomic_io import atomic_path
from cfqa.config import NQSourceConfig
from cfqa.logs import get_logger
from cfqa.nq.http_fetch import DownloadError, fetch
from cfqa.nq.original_format import convert_files

log = get_logger(__name__)

TRAIN_FILE = "train.jsonl.gz"
DEV_FILE = "dev.jsonl.gz"
_GZIP_MAGIC = b"\x1f\x8b"


def default_cache_dir(raw_dir: Path) -> Path:
    return Path(raw_dir).resolve().parent / "downloads"


def file_name_of(url: str) -> str:
    name = Path(urlparse(url).path).name
    if not name:
        raise DownloadError(f"{url}: the URL names no file")
    return name


def check_gzip(path: Path, url: str) -> None:
    with open(path, "rb") as handle:
        if handle.read(2) != _GZIP_MAGIC:
            raise DownloadError(f"{path} (from {url}) is not a gzip file; the server may have sent an "
                                "error page. Delete it and run again")


def place(source: Path, destination: Path) -> None:
    """`destination` becomes a hard link to `source` (a copy across file systems), atomically."""
    if destination.exists() and os.path.samefile(source, destination):
        return
    with atomic_path(destination) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def download_nq(nq_cfg: NQSourceConfig, raw_dir: Path, *, cache_dir: Path | None = None,
                session: requests.Session | None = None, retry_wait_s: float = 5.0) -> None:
    raw_dir = Path(raw_dir)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(raw_dir)
    urls = [nq_cfg.train_url, *nq_cfg.dev_urls]
    names = [file_name_of(url) for url in urls]
    if len(set(names)) != len(names):
        raise DownloadError(f"data.nq URLs must name distinct files, got {names}")
    log.info("downloading NQ into %s (kept there to resume and reuse)", cache)
    session = session or requests.Session()
    downloaded = [fetch(url, cache / name, session=session, retry_wait_s=retry_wait_s)
                  for url, name in zip(urls, names)]
    for path, url in zip(downloaded, urls):
        check_gzip(path, url)

    raw_dir.mkdir(parents=True, exist_ok=True)
    place(downloaded[0], raw_dir / TRAIN_FILE)
    log.info("placed %s as %s", downloaded[0], raw_dir / TRAIN_FILE)
    convert_files(downloaded[1:], raw_dir / DEV_FILE)
