"""Streaming the lines of a gzip JSONL file fast, with line numbers and a progress bar.

isal's inflate is ~2.7x faster than zlib's on this machine (measured: 497 vs 185 MB/s), and its
threaded reader decompresses in a background thread that releases the GIL, so inflating the
next block overlaps with parsing the current one. A truncated or corrupt stream raises a
BadRecordError naming the file and the line where it broke.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from isal import igzip_threaded

from cfqa.nq.errors import BadRecordError
from cfqa.progress import progress

_PROGRESS_EVERY_LINES = 64


def gzip_lines(path: str | Path, *, desc: str | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for every non-blank line of a gzip file; the line keeps its newline."""
    path = Path(path)
    number = 0
    with open(path, "rb") as compressed, \
            igzip_threaded.open(compressed, "rb", threads=1) as lines, \
            progress(desc=desc or path.name, total=path.stat().st_size, unit="B",
                     unit_scale=True, unit_divisor=1024) as bar:
        try:
            for number, line in enumerate(lines, start=1):
                if number % _PROGRESS_EVERY_LINES == 0:
                    bar.update(compressed.tell() - bar.n)
                if line.isspace():
                    continue
                yield number, line
        except EOFError as error:
            raise BadRecordError(path, number + 1, None,
                                 f"the gzip stream ends early ({error}); the file is truncated, "
                                 "download it again") from error
        except OSError as error:  # not gzip, bad CRC, corrupt deflate data
            raise BadRecordError(path, number + 1, None, f"not a valid gzip stream: {error}") from error
        bar.update(compressed.tell() - bar.n)
