"""Writing a gzip JSONL file atomically: a killed writer never leaves a file under the final name."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import orjson
from isal import igzip_threaded

from cfqa.io.atomic_io import atomic_path

# isal's levels run 0-3; 2 is its speed/size trade-off (close to zlib's level 6 in size).
_COMPRESS_LEVEL = 2


class JsonlGzipWriter:
    def __init__(self, stream):
        self._stream = stream
        self.count = 0

    def write(self, record: dict) -> None:
        self._stream.write(orjson.dumps(record))
        self._stream.write(b"\n")
        self.count += 1


@contextlib.contextmanager
def atomic_jsonl_gz(path: str | Path) -> Iterator[JsonlGzipWriter]:
    """A writer of one JSON record per line into `path` (gzip), renamed into place on success."""
    with atomic_path(path) as tmp:
        with igzip_threaded.open(tmp, "wb", compresslevel=_COMPRESS_LEVEL, threads=1) as stream:
            yield JsonlGzipWriter(stream)
