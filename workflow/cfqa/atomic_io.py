"""Atomic file output: write to a temporary sibling, then rename.

A killed stage therefore never leaves a file that looks complete; rerunning it is safe.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path next to `path`; renames it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[Any]:
    with atomic_path(path) as tmp:
        encoding = None if "b" in mode else kwargs.pop("encoding", "utf-8")
        with open(tmp, mode, encoding=encoding, **kwargs) as handle:
            yield handle


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yields a temporary directory; it replaces `path` (a directory) only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp creates 0700; give the usual permissions
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: str | Path, value: Any) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        handle.write(b"\n")


def read_json(path: str | Path) -> Any:
    with open(path, "rb") as handle:
        try:
            return orjson.loads(handle.read())
        except orjson.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON: {error}") from error


def write_jsonl(path: str | Path, rows: Iterable[Any], encode: Callable[[Any], bytes] = orjson.dumps) -> int:
    """One JSON value per line, atomically; `encode` turns a row into bytes. Returns the count."""
    count = 0
    with atomic_open(path, "wb") as handle:
        for row in rows:
            handle.write(encode(row))
            handle.write(b"\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Rows of a JSONL file; a bad line raises an error naming the file and line number."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: expected one JSON object per line: {error}") from error
