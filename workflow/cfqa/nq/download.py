"""Natural Questions from its official URLs → raw_dir/{train,dev}.jsonl.gz (simplified format).

Two steps. `fetch_nq` (stage `fetch`, the one that uses the network) downloads every URL into
the run's cache (`<cache>/nq`), resumably, and checks each file's sha256 against params
`data.nq.sha256`. `download_nq` (stage `download`, offline) checks the cached files again and
writes raw_dir: train is published in the simplified format and is placed as is (a hard link,
or a copy); dev is published only in the original format (nq-dev-0[0-4].jsonl.gz) and is
converted here.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import requests

from cfqa.io.atomic_io import atomic_path
from cfqa.config import NQSourceConfig
from cfqa.io.digests import sha256_file
from cfqa.errors import BadInput
from cfqa.io.logs import get_logger
from cfqa.nq.http_fetch import DownloadError, fetch
from cfqa.nq.original_format import convert_files

log = get_logger(__name__)

NQ_CACHE = "nq"                  # the downloads' folder in the run's cache
TRAIN_FILE = "train.jsonl.gz"
DEV_FILE = "dev.jsonl.gz"
_GZIP_MAGIC = b"\x1f\x8b"


class ChecksumError(BadInput, ValueError):
    """A downloaded file is not the one params.yaml pins (or its digest is not pinned yet)."""


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


def pinned_files(nq_cfg: NQSourceConfig) -> list[tuple[str, str]]:
    """(url, file name) of every URL, each name pinned by a key of data.nq.sha256."""
    urls = [nq_cfg.train_url, *nq_cfg.dev_urls]
    names = [file_name_of(url) for url in urls]
    if len(set(names)) != len(names):
        raise DownloadError(f"data.nq URLs must name distinct files, got {names}")
    missing = [name for name in names if name not in nq_cfg.sha256]
    if missing:
        raise ChecksumError(f"data.nq.sha256 has no entry for {', '.join(missing)}: pin every downloaded file")
    return list(zip(urls, names))


def check_sha256(path: Path, name: str, nq_cfg: NQSourceConfig) -> str:
    digest = sha256_file(path)
    expected = nq_cfg.sha256[name]
    if expected is None:
        raise ChecksumError(f"data.nq.sha256.{name} is not pinned; {path} has sha256 {digest}: check it against "
                            f"a trusted source and write it into params.yaml")
    if digest != expected:
        raise ChecksumError(f"{path}: sha256 {digest}, but data.nq.sha256.{name} says {expected}; delete the file "
                            f"and run `cfqa fetch` again")
    return digest


def fetch_nq(nq_cfg: NQSourceConfig, cache_dir: Path, *, session: requests.Session | None = None,
             retry_wait_s: float = 5.0) -> dict[str, str]:
    """Downloads every URL into `cache_dir` (resumable; a file already there is not fetched
    again) and checks its sha256; returns {file name: sha256}."""
    cache = Path(cache_dir)
    files = pinned_files(nq_cfg)
    log.info("downloading NQ into %s (kept there to resume and reuse)", cache)
    session = session or requests.Session()
    digests = {}
    for url, name in files:
        path = fetch(url, cache / name, session=session, retry_wait_s=retry_wait_s)
        check_gzip(path, url)
        digests[name] = check_sha256(path, name, nq_cfg)
        log.info("%s: sha256 %s as pinned", path, digests[name][:12])
    return digests


def download_nq(nq_cfg: NQSourceConfig, raw_dir: Path, *, cache_dir: Path) -> None:
    """raw_dir's train.jsonl.gz and dev.jsonl.gz from the files `fetch_nq` put in `cache_dir`
    (checked against their pins again: the cache may be shared). Reads no network."""
    raw_dir, cache = Path(raw_dir), Path(cache_dir)
    files = pinned_files(nq_cfg)
    paths = []
    for url, name in files:
        path = cache / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not downloaded (from {url}); run `cfqa fetch` where the network is")
        check_sha256(path, name, nq_cfg)
        paths.append(path)
    raw_dir.mkdir(parents=True, exist_ok=True)
    place(paths[0], raw_dir / TRAIN_FILE)
    log.info("placed %s as %s", paths[0], raw_dir / TRAIN_FILE)
    convert_files(paths[1:], raw_dir / DEV_FILE)
