"""Resumable HTTP download of one large file (NQ train is ~4.4 GB).

Bytes go to `<name>.part`; a broken transfer is resumed with an HTTP Range request (the server
may answer 206 and append, or 200 and restart), retried a few times, and the file is renamed
to its final name only once its size matches the server's. Bytes are stored exactly as sent
(no transparent Content-Encoding decoding), so a .gz stays the published .gz.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import requests
import urllib3

from cfqa.io.logs import get_logger
from cfqa.io.progress import progress

log = get_logger(__name__)

_CONTENT_RANGE = re.compile(r"bytes (?:\d+-\d+|\*)/(\d+|\*)")


class DownloadError(RuntimeError):
    pass


class _Retryable(Exception):
    pass


def part_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".part")


def _total_from(response: requests.Response, offset: int) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match and match.group(1) != "*" else None
    length = response.headers.get("Content-Length")
    return int(length) + offset if length is not None and length.isdigit() else None


def _transfer(url: str, part: Path, session: requests.Session, chunk_bytes: int, timeout_s: float) -> None:
    """One attempt: appends to (or restarts) `part` until the server's total size is reached."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # the stored bytes must be the published file
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout_s) as response:
            if response.status_code == 416:  # nothing after `offset`: complete, or the file changed
                match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
                if match and match.group(1) == str(offset):
                    return
                part.unlink()
                raise _Retryable(f"the server rejected resuming at byte {offset}; starting over")
            if response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code} {response.reason}")
            if response.status_code not in (200, 206):
                raise DownloadError(f"could not download {url}: HTTP {response.status_code} {response.reason}")
            if response.status_code == 200:
                offset = 0  # the server ignored the Range header: start over
            total = _total_from(response, offset)
            with open(part, "ab" if offset else "wb") as out, \
                    progress(desc=part.name.removesuffix(".part"), total=total, initial=offset, unit="B",
                             unit_scale=True, unit_divisor=1024) as bar:
                for chunk in response.raw.stream(chunk_bytes, decode_content=False):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as error:
        raise _Retryable(f"{type(error).__name__}: {error}") from error
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Retryable(f"the transfer stopped at {size} of {total} bytes")


def fetch(url: str, destination: str | Path, *, session: requests.Session | None = None, attempts: int = 5,
          retry_wait_s: float = 5.0, chunk_bytes: int = 1 << 20, timeout_s: float = 60.0) -> Path:
    """Downloads `url` to `destination` (skipped if it exists), resuming `<destination>.part`."""
    destination = Path(destination)
    if destination.exists():
        log.info("%s already downloaded", destination)
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(destination)
    session = session or requests.Session()
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, session, chunk_bytes, timeout_s)
            break
        except _Retryable as error:
            kept = f"{part.stat().st_size} bytes kept in {part}" if part.exists() else "nothing kept"
            if attempt == attempts:
                raise DownloadError(
                    f"could not download {url} after {attempts} attempts ({error}); is this machine "
                    f"online? {kept}; run again to resume") from error
            log.warning("download of %s interrupted (%s); %s; retrying (%d/%d)", url, error, kept,
                        attempt + 1, attempts)
            time.sleep(retry_wait_s)
    os.replace(part, destination)
    log.info("downloaded %s to %s (%d bytes)", url, destination, destination.stat().st_size)
    return destination
