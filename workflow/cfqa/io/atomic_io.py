"""Stage outputs written safely: atomically (temp sibling + rename), by one process at a time,
with the debris of a killed run removed by the next.

A killed stage therefore never leaves a file that looks complete; rerunning it is safe. A
write the filesystem refuses for lack of space (full disk, quota, file-size limit) removes its
partial file too, and raises NoSpaceError naming the output it was writing.
Temporary names are `.{target}.{8 random characters}.tmp` next to the target (tempfile's
naming), so a rerun can tell its own stage's debris from any other file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import filelock
import orjson
from cfqa.errors import BadInput


_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK      # what a plain open() gives
DIR_MODE = 0o777 & ~_UMASK       # what a plain mkdir() gives
_TEMP_SUFFIX = r"\.[a-z0-9_]{8}\.tmp"   # tempfile's 8 random characters, then our suffix


# What a write fails with when the filesystem takes no more bytes, and what to do about it.
_NO_SPACE_ADVICE = {
    errno.ENOSPC: "free space on that filesystem, then rerun",
    errno.EDQUOT: "free space or raise the disk quota, then rerun",
    errno.EFBIG: "raise the file-size limit (ulimit -f) or use a filesystem that takes larger files, then rerun",
}
# Writers in Rust (safetensors) report an OS error only in their message, in std::io::Error's
# fixed form "No space left on device (os error 28)".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class NoSpaceError(OSError):
    """An output could not be written: the filesystem refused more bytes (full, over quota,
    or over the file-size limit). `filename` is the output, never a temporary name."""

    def __str__(self) -> str:
        return (f"{self.filename}: {self.strerror.lower()} ({errno.errorcode[self.errno]}) while writing it; "
                f"the partial write was removed, nothing was replaced: {_NO_SPACE_ADVICE[self.errno]}")


def no_space_errno(error: BaseException) -> int | None:
    """The errno (ENOSPC, EDQUOT or EFBIG) if `error`, or an error it was raised from or while
    handling, is a write refused for lack of space; None otherwise. Writers that wrap the
    OSError (torch's zip writer, MLflow) keep it in the chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ADVICE:
            return current.errno
        match = _RUST_OS_ERROR.search(str(current))
        if match and int(match.group(1)) in _NO_SPACE_ADVICE:
            return int(match.group(1))
        current = current.__cause__ if current.__cause__ is not None else current.__context__
    return None


@contextlib.contextmanager
def _naming_no_space(target: Path, tmp: Path | None = None) -> Iterator[None]:
    """Turns a write refused for lack of space into NoSpaceError naming `target`. A
    NoSpaceError from a write inside the temporary `tmp` (an atomic_dir's) is renamed to the
    file's place under `target`; one naming another output passes unchanged."""
    try:
        yield
    except Exception as error:
        code = no_space_errno(error)
        if code is None:
            raise
        name = target
        if isinstance(error, NoSpaceError):
            inner = Path(error.filename)
            if tmp is None or not inner.is_relative_to(tmp):
                raise
            name = target / inner.relative_to(tmp)
        raise NoSpaceError(code, os.strerror(code), str(name)) from error


class FileFormatError(BadInput, ValueError):
    """An input file is not the format it should be; the message names the file (and line)."""


class OutputLocked(BadInput, RuntimeError):
    """Another process holds the lock on an output this run would write."""


def _usual_modes(root: Path) -> None:
    """Gives `root` and everything under it the modes plain open()/mkdir() would give.

    mkstemp/mkdtemp create 0600/0700, and writers that save through their own temporary
    file (safetensors' save_file) leave 0600: outputs must not depend on how they were written.
    Executable files stay executable."""
    def fix(path: Path, directory: bool) -> None:
        current = os.lstat(path).st_mode
        if directory:
            wanted = DIR_MODE
        else:
            wanted = DIR_MODE if current & 0o111 else FILE_MODE
        if (current & 0o7777) != wanted:
            os.chmod(path, wanted)

    if root.is_symlink():
        return
    fix(root, root.is_dir())
    if root.is_dir():
        for parent, dirs, files in os.walk(root):
            for name in dirs:
                if not os.path.islink(os.path.join(parent, name)):
                    fix(Path(parent, name), True)
            for name in files:
                if not os.path.islink(os.path.join(parent, name)):
                    fix(Path(parent, name), False)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path next to `path`; renames it onto `path` only on success."""
    path = Path(path)
    with _naming_no_space(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming_no_space(path):
            yield tmp_path
        _usual_modes(tmp_path)   # after the writer: it may have replaced the file
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
    with _naming_no_space(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with _naming_no_space(path, tmp):
            yield tmp
        _usual_modes(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def is_temporary(name: str, target: str | None = None) -> bool:
    """Whether `name` is a temporary name atomic_path/atomic_dir make (for `target`, if given)."""
    stem = re.escape(target) if target is not None else r".+"
    return re.fullmatch(rf"\.{stem}{_TEMP_SUFFIX}", name) is not None


def remove_debris(path: str | Path) -> list[Path]:
    """Removes what a killed writer of `path` left: its temporary siblings and, when `path` is
    a directory, the temporary files of writes inside it. Returns what it removed.

    Call it only while holding `exclusive_outputs` for `path`: a live writer's temporaries
    have the same names."""
    path = Path(path)
    found: list[Path] = []
    if path.parent.is_dir():
        found += [p for p in path.parent.iterdir() if is_temporary(p.name, path.name)]
    if path.is_dir() and not path.is_symlink():
        found += [p for p in path.iterdir() if is_temporary(p.name)]
    for debris in sorted(found):
        if debris.is_dir() and not debris.is_symlink():
            shutil.rmtree(debris)
        else:
            debris.unlink(missing_ok=True)
    return sorted(found)


def lock_path(path: str | Path) -> Path:
    """The lock file guarding output `path`: a hidden sibling."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def exclusive_outputs(paths: Iterable[str | Path], holder: str = "cfqa") -> Iterator[None]:
    """Holds a lock on every output in `paths` (filelock: an flock the kernel drops when the
    process dies, so a killed run leaves no stale lock). A second run writing any of them
    fails at once with OutputLocked naming the lock file and its holder, rather than waiting:
    the engines never schedule two jobs for one output, so contention means two runs were
    started by hand, and the second would only redo the first's work and replace its files."""
    held: list[tuple[filelock.BaseFileLock, Path]] = []
    try:
        for path in sorted({Path(p) for p in paths}):
            lock_file = lock_path(path)
            with _naming_no_space(lock_file):
                lock_file.parent.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(str(lock_file), timeout=0)
            try:
                with _naming_no_space(lock_file):
                    lock.acquire()
            except filelock.Timeout:
                owner = lock_file.read_text(encoding="utf-8", errors="replace").strip() if lock_file.exists() else ""
                raise OutputLocked(
                    f"{lock_file}: another run ({owner or 'unknown holder'}) is writing {path}; "
                    f"wait for it to finish or stop it, then rerun") from None
            held.append((lock, lock_file))
            with _naming_no_space(lock_file):
                lock_file.write_text(f"pid {os.getpid()} on {socket.gethostname()}: {holder}\n",
                                     encoding="utf-8")
        yield
    finally:
        for lock, lock_file in reversed(held):
            # Unlinked while still held: a contender that opened the old file sees an
            # unlinked inode and retries (filelock checks), so no lock file is left behind.
            lock_file.unlink(missing_ok=True)
            lock.release()


def write_json(path: str | Path, value: Any) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        handle.write(b"\n")


def read_json(path: str | Path) -> Any:
    with open(path, "rb") as handle:
        try:
            return orjson.loads(handle.read())
        except orjson.JSONDecodeError as error:
            raise FileFormatError(f"{path}: not valid JSON: {error}") from error


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
                raise FileFormatError(f"{path}:{number}: expected one JSON object per line: {error}") from error
