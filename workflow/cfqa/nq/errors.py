"""The errors every NQ reader raises for bad input: they name the file, the line and the field.

A bad record carries a reason (one of REASONS) so that tolerated records can be counted by kind.
File-level damage (a corrupt or truncated gzip stream, a file with no records) is a
BadRecordError too, with its own subclass: callers that catch BadRecordError see every way an
input can be wrong, and a caller can still tell a file it must fetch again from a record it may skip.
"""
from __future__ import annotations

from pathlib import Path
from cfqa.errors import BadInput

INVALID_JSON = "invalid_json"
INVALID_UTF8 = "invalid_utf8"
TOO_DEEPLY_NESTED = "too_deeply_nested"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
INVALID_VALUE = "invalid_value"
DUPLICATE_ID = "duplicate_id"
REASONS = (INVALID_JSON, INVALID_UTF8, TOO_DEEPLY_NESTED, MISSING_FIELD, WRONG_TYPE, INVALID_VALUE, DUPLICATE_ID)


class BadRecordError(BadInput, ValueError):
    """One input record (or the file around it) is not what the format promises."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, expectation: str,
                 reason: str = INVALID_VALUE):
        self.path = str(path)
        self.line = line
        self.field = field
        self.expectation = expectation
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"{field}: {expectation}" if field else expectation
        super().__init__(f"{where}: {what}")

    def as_dict(self) -> dict:
        return {"file": self.path, "line": self.line, "field": self.field, "reason": self.reason,
                "error": self.expectation}


class DamagedGzipError(BadRecordError):
    """The gzip stream is corrupt or truncated at `line`: nothing after it can be read."""

    def __init__(self, path: str | Path, line: int, expectation: str):
        super().__init__(path, line, None, expectation, reason="damaged_gzip")


class ManifestMismatch(BadRecordError):
    """A raw file is not the one `cfqa download` recorded in manifest.json (size or sha256), or the
    manifest is missing: the file changed, or was cut short, after it was written."""

    def __init__(self, path: str | Path, expectation: str):
        super().__init__(path, None, None, expectation, reason="manifest_mismatch")


class NoRecordsError(BadRecordError):
    """A file holds no record to use (empty, blank, or every record was bad)."""

    def __init__(self, path: str | Path, expectation: str):
        super().__init__(path, None, None, expectation, reason="no_records")


class RecordProblem(BadInput, ValueError):
    """A problem found inside one record before its file and line are known."""

    def __init__(self, field: str | None, expectation: str, reason: str = INVALID_VALUE):
        self.field = field
        self.expectation = expectation
        self.reason = reason
        super().__init__(f"{field}: {expectation}" if field else expectation)

    def at(self, path: str | Path, line: int) -> BadRecordError:
        return BadRecordError(path, line, self.field, self.expectation, self.reason)
