"""Streaming the lines of a gzip JSONL file fast, with line numbers and a progress bar.

isal's inflate is ~2.7x faster than zlib's on this machine (measured: 497 vs 185 MB/s), and its
threaded reader decompresses in a background thread that releases the GIL, so inflating the
next block overlaps with parsing the current one.

A damaged stream (bad header, corrupt deflate data, CRC mismatch, truncation) raises a
DamagedGzipError naming the file and the line where reading broke. The threaded reader
inflates 1 MiB blocks and drops the part of a block before the fault, so its position says
little; the exact line is found, on that error path only, by inflating the file again with
zlib, which can be fed byte by byte. isal's inflate is more lenient than zlib's: a bit flip can
give garbage lines up to the CRC check at the end of the stream, so a caller about to stop on a
bad record asks `damage_before` whether the stream broke there already. A file with no line to
read is a NoRecordsError.
"""
from __future__ import annotations

import contextlib
import io
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

from isal import igzip, igzip_threaded, isal_zlib

from cfqa.io.logs import get_logger
from cfqa.nq.errors import DamagedGzipError, NoRecordsError
from cfqa.io.progress import progress

log = get_logger(__name__)

_PROGRESS_EVERY_LINES = 64
_SCAN_CHUNK_BYTES = 1 << 16
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# What isal's gzip reader raises on damage: EOFError (truncated), BadGzipFile (bad magic, CRC or
# length) and isal's own error (corrupt deflate data, bad header flags). Other OSErrors (a failing
# disk) are not the file's content and pass through.
_DAMAGE = (EOFError, igzip.BadGzipFile, isal_zlib.error)


class _HashingReader(io.RawIOBase):
    """A binary file that feeds every byte read from it to a hash (the sha256 a manifest
    records), so a file is hashed in the pass that decompresses it."""

    def __init__(self, raw: BinaryIO, digest):
        self.raw, self.digest, self.position = raw, digest, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.raw.readinto(buffer)
        if count:
            self.digest.update(memoryview(buffer)[:count])
            self.position += count
        return count

    def tell(self) -> int:
        return self.position

    def read_rest(self) -> None:
        """Hashes whatever the decompressor left unread (nothing, after a complete stream)."""
        while chunk := self.raw.read(1 << 20):
            self.digest.update(chunk)
            self.position += len(chunk)


def gzip_lines(path: str | Path, *, desc: str | None = None, sha256=None) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for every non-blank line of a gzip file; the line keeps its newline.
    `sha256`, a hashlib object, is fed every byte of the file as it is read; it holds the
    file's hash once every line has been taken."""
    path = Path(path)
    number = 0
    yielded = False
    with open(path, "rb") as opened, \
            contextlib.nullcontext(opened if sha256 is None else _HashingReader(opened, sha256)) as compressed, \
            igzip_threaded.open(compressed, "rb", threads=1) as lines, \
            progress(desc=desc or path.name, total=path.stat().st_size, unit="B",
                     unit_scale=True, unit_divisor=1024) as bar:
        try:
            for number, line in enumerate(lines, start=1):
                if number % _PROGRESS_EVERY_LINES == 0:
                    bar.update(compressed.tell() - bar.n)
                if line.isspace():
                    continue
                yielded = True
                yield number, line
        except _DAMAGE as error:
            raise damaged_gzip_error(path, error, fallback_line=number + 1) from error
        if sha256 is not None:
            compressed.read_rest()
        bar.update(compressed.tell() - bar.n)
    if not yielded:
        raise NoRecordsError(path, f"expected one JSON record per line, found none ({number} blank lines "
                                   f"in {path.stat().st_size} bytes); download the file again")


def damaged_gzip_error(path: Path, error: BaseException, *, fallback_line: int) -> DamagedGzipError:
    log.info("locating where the gzip stream of %s breaks (%s)", path, error)
    line = line_reached(path) or fallback_line
    what = ("the gzip stream ends early, the file is truncated" if isinstance(error, EOFError)
            else "not a valid gzip stream")
    return DamagedGzipError(path, line, f"{what}: it breaks after {line - 1} complete lines "
                                        f"({type(error).__name__}: {error}); nothing from line {line} on "
                                        "can be read: download the file again")


def damage_before(path: str | Path, line: int) -> DamagedGzipError | None:
    """The damage of `path`'s gzip stream at or before `line`, if zlib finds any there."""
    log.info("checking the gzip stream of %s up to line %d for damage", path, line)
    reached = line_reached(path, within_lines=line)
    if reached is None:
        return None
    return DamagedGzipError(path, reached, f"not a valid gzip stream: it breaks after {reached - 1} complete "
                                           f"lines (found while checking why line {line} is not a record); "
                                           "download the file again")


def line_reached(path: str | Path, *, within_lines: int | None = None) -> int | None:
    """1 + the newlines inflated before `path`'s gzip stream breaks; None if it does not break
    (within the first `within_lines` lines, if given)."""
    counter = _LineCounter()
    with open(path, "rb") as handle:
        while chunk := handle.read(_SCAN_CHUNK_BYTES):
            if within_lines is not None and counter.newlines >= within_lines:
                return None
            before = counter.copy()
            try:
                counter.feed(chunk)
            except zlib.error:
                return _within(_line_reached_bytewise(before, chunk), within_lines)
    return _within(counter.newlines + 1, within_lines) if counter.in_member else None  # truncated


def _within(line: int, within_lines: int | None) -> int | None:
    return line if within_lines is None or line <= within_lines else None


def _line_reached_bytewise(counter: "_LineCounter", chunk: bytes) -> int:
    # zlib keeps the output of the bytes before a fault only when fed in small pieces.
    for index in range(len(chunk)):
        try:
            counter.feed(chunk[index:index + 1])
        except zlib.error:
            break
    return counter.newlines + 1


class _LineCounter:
    """Inflates consecutive gzip members (zero padding between them allowed, as gzip does)."""

    __slots__ = ("inflater", "newlines", "in_member")

    def __init__(self):
        self.inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
        self.newlines = 0
        self.in_member = False

    def copy(self) -> "_LineCounter":
        other = _LineCounter()
        other.inflater, other.newlines, other.in_member = self.inflater.copy(), self.newlines, self.in_member
        return other

    def feed(self, data: bytes) -> None:
        while data:
            if not self.in_member:
                data = data.lstrip(b"\0")
                if not data:
                    return
                self.inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
                self.in_member = True
            self.newlines += self.inflater.decompress(data).count(b"\n")
            if not self.inflater.eof:
                return
            data, self.in_member = self.inflater.unused_data, False
