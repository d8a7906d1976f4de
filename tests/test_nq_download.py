"""Resumable download and the NQ download source, against a local HTTP server (no network)."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import re
import socket
import threading
from pathlib import Path

import pytest

from cfqa.config import NQSourceConfig
from cfqa.nq.download import ChecksumError, download_nq, fetch_nq
from cfqa.nq.http_fetch import DownloadError, fetch

FIXTURES = Path(__file__).parent / "fixtures" / "nq"
BIG = bytes(range(256)) * 4096  # 1 MiB


class FileServer(http.server.ThreadingHTTPServer):
    """Serves `files` from memory with HTTP Range support. `cut_after` makes the first response
    for a path stop after that many bytes (a dropped connection); `ignore_range` answers 200."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.cut_after: dict[str, int] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server: FileServer = self.server
        range_header = self.headers.get("Range")
        server.requests.append((self.path, range_header))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and not server.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = server.cut_after.pop(self.path, None)
        self.wfile.write(body[start:start + cut] if cut is not None else body[start:])
        if cut is not None:
            self.close_connection = True


@pytest.fixture
def server():
    srv = FileServer({"/big.bin": BIG})
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fetch_downloads_the_exact_bytes_and_leaves_no_part_file(server, tmp_path):
    path = fetch(server.url("/big.bin"), tmp_path / "big.bin", retry_wait_s=0)
    assert path.read_bytes() == BIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]


def test_a_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.cut_after["/big.bin"] = 300_000
    path = fetch(server.url("/big.bin"), tmp_path / "big.bin", retry_wait_s=0, chunk_bytes=65536)
    assert path.read_bytes() == BIG
    assert server.requests == [("/big.bin", None), ("/big.bin", "bytes=300000-")]


def test_a_part_file_from_an_earlier_run_is_resumed(server, tmp_path):
    (tmp_path / "big.bin.part").write_bytes(BIG[:123_456])
    fetch(server.url("/big.bin"), tmp_path / "big.bin", retry_wait_s=0)
    assert (tmp_path / "big.bin").read_bytes() == BIG
    assert server.requests == [("/big.bin", "bytes=123456-")]


def test_a_complete_part_file_is_finished_without_downloading_again(server, tmp_path):
    (tmp_path / "big.bin.part").write_bytes(BIG)
    fetch(server.url("/big.bin"), tmp_path / "big.bin", retry_wait_s=0)
    assert (tmp_path / "big.bin").read_bytes() == BIG


def test_a_server_that_ignores_range_makes_the_download_start_over(server, tmp_path):
    server.ignore_range = True
    (tmp_path / "big.bin.part").write_bytes(b"stale bytes")
    fetch(server.url("/big.bin"), tmp_path / "big.bin", retry_wait_s=0)
    assert (tmp_path / "big.bin").read_bytes() == BIG


def test_an_existing_download_is_not_fetched_again(server, tmp_path):
    (tmp_path / "big.bin").write_bytes(b"already here")
    fetch(server.url("/big.bin"), tmp_path / "big.bin")
    assert server.requests == []


def test_http_errors_and_being_offline_name_the_url_and_leave_no_final_file(server, tmp_path):
    missing = server.url("/missing.bin")
    with pytest.raises(DownloadError, match=re.escape(missing) + ".*HTTP 404"):
        fetch(missing, tmp_path / "missing.bin", retry_wait_s=0)
    offline = f"http://127.0.0.1:{_closed_port()}/nq.jsonl.gz"
    with pytest.raises(DownloadError, match=re.escape(offline) + r" after 2 attempts.*online"):
        fetch(offline, tmp_path / "nq.jsonl.gz", attempts=2, retry_wait_s=0, timeout_s=5)
    assert list(tmp_path.iterdir()) == []


def nq_config(server, files: dict[str, bytes], sha256: dict | None = None) -> NQSourceConfig:
    """data.nq for `files` (URL path -> bytes) on the server, each pinned by its real sha256
    unless `sha256` says otherwise; the first is train, the rest dev."""
    urls = [server.url(path) for path in files]
    digests = {path.rsplit("/", 1)[1]: hashlib.sha256(body).hexdigest() for path, body in files.items()}
    digests.update(sha256 or {})
    return NQSourceConfig(train_url=urls[0], dev_urls=tuple(urls[1:]), sha256=digests)


NQ_FILES = {
    "/v1.0-simplified/simplified-nq-train.jsonl.gz": (FIXTURES / "simplified_train.jsonl.gz").read_bytes(),
    "/v1.0/dev/nq-dev-00.jsonl.gz": (FIXTURES / "original_dev_00.jsonl.gz").read_bytes(),
    "/v1.0/dev/nq-dev-01.jsonl.gz": (FIXTURES / "original_dev_01.jsonl.gz").read_bytes(),
}


def test_fetch_then_download_places_train_as_is_and_converts_dev_offline(server, tmp_path):
    server.files.update(NQ_FILES)
    server.cut_after["/v1.0/dev/nq-dev-01.jsonl.gz"] = 100
    nq = nq_config(server, NQ_FILES)
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    digests = fetch_nq(nq, cache, retry_wait_s=0)
    assert digests == nq.sha256
    assert sorted(p.name for p in cache.iterdir()) == ["nq-dev-00.jsonl.gz", "nq-dev-01.jsonl.gz",
                                                       "simplified-nq-train.jsonl.gz"]
    before = len(server.requests)
    download_nq(nq, raw, cache_dir=cache)                 # offline: reads the cache only
    assert len(server.requests) == before
    assert sorted(p.name for p in raw.iterdir()) == ["dev.jsonl.gz", "train.jsonl.gz"]
    assert (raw / "train.jsonl.gz").read_bytes() == NQ_FILES["/v1.0-simplified/simplified-nq-train.jsonl.gz"]
    dev = [json.loads(line) for line in gzip.decompress((raw / "dev.jsonl.gz").read_bytes()).splitlines()]
    assert [r["example_id"] for r in dev] == [9001, 9002, 9003, 9004]
    assert all("document_text" in r and "document_tokens" not in r for r in dev)
    # A second fetch reuses the cache: no request reaches the server.
    fetch_nq(nq, cache, retry_wait_s=0)
    assert len(server.requests) == before


def test_a_file_that_is_not_the_pinned_one_stops_fetch_and_download(server, tmp_path):
    server.files.update(NQ_FILES)
    real = hashlib.sha256(NQ_FILES["/v1.0/dev/nq-dev-00.jsonl.gz"]).hexdigest()
    wrong = nq_config(server, NQ_FILES, {"nq-dev-00.jsonl.gz": "e" * 64})
    with pytest.raises(ChecksumError, match=rf"nq-dev-00\.jsonl\.gz: sha256 {real}, but data\.nq\.sha256\."
                                            rf"nq-dev-00\.jsonl\.gz says e{{64}}"):
        fetch_nq(wrong, tmp_path / "cache", retry_wait_s=0)
    with pytest.raises(ChecksumError, match="says e{64}"):                  # the cache is checked again
        download_nq(wrong, tmp_path / "raw", cache_dir=tmp_path / "cache")
    unpinned = nq_config(server, NQ_FILES, {"nq-dev-00.jsonl.gz": None})
    with pytest.raises(ChecksumError, match=rf"data\.nq\.sha256\.nq-dev-00\.jsonl\.gz is not pinned; .* has "
                                            rf"sha256 {real}"):
        fetch_nq(unpinned, tmp_path / "cache", retry_wait_s=0)
    missing = NQSourceConfig(train_url=wrong.train_url, dev_urls=wrong.dev_urls, sha256={})
    with pytest.raises(ChecksumError, match="data.nq.sha256 has no entry for simplified-nq-train.jsonl.gz"):
        fetch_nq(missing, tmp_path / "cache", retry_wait_s=0)


def test_download_without_fetch_says_to_run_fetch(server, tmp_path):
    nq = nq_config(server, NQ_FILES)
    with pytest.raises(FileNotFoundError, match=r"simplified-nq-train\.jsonl\.gz: not downloaded .*run `cfqa fetch`"):
        download_nq(nq, tmp_path / "raw", cache_dir=tmp_path / "cache")
    assert server.requests == []


def test_fetch_nq_rejects_a_non_gzip_answer(server, tmp_path):
    server.files["/train.jsonl.gz"] = b"<html>quota exceeded</html>"
    nq = nq_config(server, {"/train.jsonl.gz": server.files["/train.jsonl.gz"]})
    with pytest.raises(DownloadError, match="is not a gzip file"):
        fetch_nq(nq, tmp_path / "cache", retry_wait_s=0)
