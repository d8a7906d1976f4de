"""Atomic outputs: a failure leaves neither a target nor a temporary file behind, the old
output survives a failed rewrite, a write refused for lack of space names the output, files
get the usual permissions, and JSONL errors name the file and line."""
from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import stat

import pytest

import subprocess
import sys

import torch
from safetensors.torch import save_file

from cfqa.io.atomic_io import (FileFormatError, NoSpaceError, OutputLocked, atomic_dir, atomic_open, atomic_path,
                            exclusive_outputs, is_temporary, lock_path, no_space_errno, read_json, read_jsonl,
                            remove_debris, write_json, write_jsonl)


class Interrupted(RuntimeError):
    pass


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "out" / "rows.jsonl"
    with pytest.raises(Interrupted):
        with atomic_open(target) as handle:
            handle.write("half a line")
            raise Interrupted()
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_failed_rewrite_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"em": 1})
    with pytest.raises(Interrupted):
        with atomic_open(target, "wb") as handle:
            handle.write(b"{")
            raise Interrupted()
    assert read_json(target) == {"em": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_successful_write_replaces_the_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("old", encoding="utf-8")
    with atomic_open(target) as handle:
        handle.write("naïve")
    assert target.read_text(encoding="utf-8") == "naïve"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_failed_directory_leaves_nothing_and_keeps_the_old_one(tmp_path):
    fresh = tmp_path / "model"
    with pytest.raises(Interrupted):
        with atomic_dir(fresh) as tmp:
            (tmp / "weights.safetensors").write_bytes(b"partial")
            raise Interrupted()
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "base"
    existing.mkdir()
    (existing / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(Interrupted):
        with atomic_dir(existing) as tmp:
            (tmp / "new.txt").write_text("new", encoding="utf-8")
            raise Interrupted()
    assert [p.name for p in tmp_path.iterdir()] == ["base"]
    assert [p.name for p in existing.iterdir()] == ["old.txt"]


def test_successful_directory_replaces_the_old_one(tmp_path):
    target = tmp_path / "base"
    target.mkdir()
    (target / "old.txt").write_text("old", encoding="utf-8")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new", encoding="utf-8")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["base"]


def test_outputs_get_the_usual_permissions_not_0600(tmp_path):
    umask = current_umask()
    write_json(tmp_path / "a.json", [1])
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("x", encoding="utf-8")
    # mkstemp/mkdtemp create 0600/0700 whatever the umask; outputs must follow the umask.
    assert mode(tmp_path / "a.json") == 0o666 & ~umask
    assert mode(tmp_path / "d") == 0o777 & ~umask
    if umask == 0o022:
        assert (mode(tmp_path / "a.json"), mode(tmp_path / "d")) == (0o644, 0o755)


def test_jsonl_round_trip_and_blank_lines(tmp_path):
    rows = [{"id": 1, "answer": "São Paulo"}, {"id": 2, "answers": []}]
    assert write_jsonl(tmp_path / "rows.jsonl", iter(rows)) == 2
    assert list(read_jsonl(tmp_path / "rows.jsonl")) == rows
    (tmp_path / "gaps.jsonl").write_text('{"id": 1}\n\n{"id": 2}\n', encoding="utf-8")
    assert [r["id"] for r in read_jsonl(tmp_path / "gaps.jsonl")] == [1, 2]


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}\n{"id": \n', encoding="utf-8")
    rows = read_jsonl(path)
    assert next(rows) == {"id": 1} and next(rows) == {"id": 2}
    with pytest.raises(FileFormatError, match=f"^{path}:3: expected one JSON object per line"):
        next(rows)


def test_bad_json_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{'single': 'quotes'}", encoding="utf-8")
    with pytest.raises(FileFormatError, match=f"^{path}: not valid JSON"):
        read_json(path)


def test_safetensors_written_through_temporaries_get_the_usual_permissions(tmp_path):
    """safetensors' save_file writes 0600 whatever the umask; outputs must not depend on the writer."""
    umask = current_umask()
    with atomic_dir(tmp_path / "model") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp / "trainable.safetensors"))
        (tmp / "nested").mkdir(mode=0o700)
        save_file({"w": torch.zeros(2)}, str(tmp / "nested" / "more.safetensors"))
    with atomic_path(tmp_path / "single.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    for path in (tmp_path / "model/trainable.safetensors", tmp_path / "model/nested/more.safetensors",
                 tmp_path / "single.safetensors"):
        assert mode(path) == 0o666 & ~umask, path
    assert mode(tmp_path / "model/nested") == mode(tmp_path / "model") == 0o777 & ~umask


def entered(manager):
    """Enters a writer and never leaves, as under SIGKILL (keep the manager alive: collecting it
    would run its cleanup)."""
    manager.__enter__()
    return manager


def test_debris_of_a_killed_run_is_recognized_and_removed(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    killed = [entered(atomic_dir(tmp_path / "prepared")), entered(atomic_open(tmp_path / "stats.json")),
              entered(atomic_open(results / "train.json"))]
    (tmp_path / ".prepared.keep").write_text("not ours", encoding="utf-8")      # no temporary name
    (tmp_path / ".entities.abcdefgh.tmp").mkdir()                                # another output's
    names = sorted(p.name for p in tmp_path.iterdir())
    temporary = [n for n in names if is_temporary(n, "prepared")]
    assert len(temporary) == 1 and temporary[0].startswith(".prepared.") and temporary[0].endswith(".tmp")

    assert [p.name for p in remove_debris(tmp_path / "prepared")] == temporary
    inside = [p.name for p in results.iterdir()]
    assert len(inside) == 1 and inside[0].startswith(".train.json.")
    assert [p.name for p in remove_debris(results)] == inside
    assert list(results.iterdir()) == []
    left = sorted(p.name for p in tmp_path.iterdir())
    assert ".prepared.keep" in left and ".entities.abcdefgh.tmp" in left and not any(
        is_temporary(n, "prepared") for n in left)
    assert remove_debris(tmp_path / "prepared") == []
    assert len(killed) == 3


def test_temporary_names_are_those_of_tempfile():
    assert is_temporary(".variants.k2j_x9a0.tmp", "variants")
    assert not is_temporary(".variants.k2j_x9a0.tmp", "variant")
    assert not is_temporary("variants.k2j_x9a0.tmp") and not is_temporary(".variants.tmp")
    assert not is_temporary(".variants.k2j_x9a0.tmp.bak")


def test_exclusive_outputs_refuses_a_second_writer_and_leaves_no_lock_file(tmp_path):
    out = tmp_path / "models" / "full" / "seed0"
    with exclusive_outputs([out, tmp_path / "results"], holder="first"):
        assert "first" in lock_path(out).read_text(encoding="utf-8")
        with pytest.raises(OutputLocked, match=rf"^{lock_path(out)}: another run \(pid \d+ on .*: first\) is writing {out}"):
            with exclusive_outputs([out]):
                pass
        with exclusive_outputs([tmp_path / "models" / "full" / "seed1"]):   # another output: no contention
            pass
    assert sorted(p.name for p in (tmp_path / "models" / "full").iterdir()) == []
    with exclusive_outputs([out]):          # released
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "prepared"
    holder = subprocess.Popen([sys.executable, "-c", "import os, signal\nfrom cfqa.io.atomic_io import exclusive_outputs\n"
                               f"with exclusive_outputs([{str(out)!r}]):\n    os.kill(os.getpid(), signal.SIGKILL)"])
    assert holder.wait(timeout=60) == -9
    assert lock_path(out).exists()          # the file stays; the kernel dropped the lock with the process
    with exclusive_outputs([out]):
        pass
    assert not lock_path(out).exists()


# ---- writes the filesystem refuses (tests/test_full_disk.py fills a real disk under whole stages)

@contextlib.contextmanager
def file_size_limit(limit: int):
    """The kernel's per-process file-size limit (RLIMIT_FSIZE) lowered to `limit` bytes, with
    SIGXFSZ ignored: a write past it fails with EFBIG, as a write to a full disk fails with
    ENOSPC, whatever writes it (Python, torch's C++ writer, safetensors' Rust)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_refused_write_names_the_output_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "rows.jsonl"
    write_jsonl(target, [{"id": 0}])
    with file_size_limit(1000), pytest.raises(NoSpaceError) as caught:
        write_jsonl(target, ({"id": i, "text": "x" * 100} for i in range(100)))
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(target)
    assert str(caught.value).startswith(f"{target}: file too large (EFBIG) while writing it; the partial "
                                        "write was removed, nothing was replaced: raise the file-size limit")
    assert list(read_jsonl(target)) == [{"id": 0}]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_a_refused_write_inside_a_directory_names_the_file_at_its_final_place(tmp_path):
    target = tmp_path / "variants"
    with file_size_limit(1000), pytest.raises(NoSpaceError) as caught:
        with atomic_dir(target) as tmp:
            write_jsonl(tmp / "train" / "factual.jsonl", ({"id": i, "text": "x" * 100} for i in range(100)))
    assert caught.value.filename == str(target / "train" / "factual.jsonl")     # not the temporary name
    with file_size_limit(1000), pytest.raises(NoSpaceError) as caught:
        with atomic_dir(target) as tmp, open(tmp / "plain.bin", "wb") as handle:  # a writer of its own
            handle.write(b"x" * 5000)
    assert caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_writers_that_wrap_the_os_error_are_recognized(tmp_path):
    """safetensors (Rust) keeps the errno only in its message; torch.save into an open file
    raises a RuntimeError while handling the OSError."""
    tensors = {"w": torch.zeros(10_000)}
    with file_size_limit(1000), pytest.raises(NoSpaceError) as caught:
        with atomic_dir(tmp_path / "model") as tmp:
            save_file(tensors, str(tmp / "trainable.safetensors"))
    assert "(os error 27)" in str(caught.value.__cause__) and caught.value.filename == str(tmp_path / "model")
    with file_size_limit(1000), pytest.raises(NoSpaceError) as caught:
        with atomic_open(tmp_path / "optimizer.pt", "wb") as handle:
            torch.save(tensors, handle)
    assert type(caught.value.__cause__) is RuntimeError and caught.value.filename == str(tmp_path / "optimizer.pt")
    assert list(tmp_path.iterdir()) == []


def test_other_failures_pass_unchanged(tmp_path):
    for error in (ValueError("bad row"), FileNotFoundError(errno.ENOENT, "missing", "x"),
                  RuntimeError("I/O error: Permission denied (os error 13)")):
        assert no_space_errno(error) is None
        with pytest.raises(type(error)) as caught:
            with atomic_open(tmp_path / "out.json"):
                raise error
        assert caught.value is error
    assert no_space_errno(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    assert no_space_errno(OSError(errno.EDQUOT, "Disk quota exceeded")) == errno.EDQUOT
    assert list(tmp_path.iterdir()) == []


def test_a_lock_that_cannot_be_written_names_the_lock_and_leaves_none(tmp_path):
    out = tmp_path / "results"
    with file_size_limit(8), pytest.raises(NoSpaceError) as caught:
        with exclusive_outputs([out], holder="a holder line longer than the limit"):
            pass
    assert caught.value.filename == str(lock_path(out))
    assert list(tmp_path.iterdir()) == []
