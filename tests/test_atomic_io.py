"""Atomic outputs: a failure leaves neither a target nor a temporary file behind, the old
output survives a failed rewrite, files get the usual permissions, and JSONL errors name
the file and line."""
from __future__ import annotations

import os
import stat

import pytest

from cfqa.atomic_io import atomic_dir, atomic_open, read_json, read_jsonl, write_json, write_jsonl


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
    with pytest.raises(ValueError, match=f"^{path}:3: expected one JSON object per line"):
        next(rows)


def test_bad_json_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{'single': 'quotes'}", encoding="utf-8")
    with pytest.raises(ValueError, match=f"^{path}: not valid JSON"):
        read_json(path)
