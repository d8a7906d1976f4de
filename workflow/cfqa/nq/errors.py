"""The error every NQ reader raises for bad input: it names the file, the line and the field."""
from __future__ import annotations

from pathlib import Path


class BadRecordError(ValueError):
    """One input record (or the file around it) is not what the format promises."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, expectation: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.expectation = expectation
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"{field}: {expectation}" if field else expectation
        super().__init__(f"{where}: {what}")

    def as_dict(self) -> dict:
        return {"file": self.path, "line": self.line, "field": self.field, "error": self.expectation}


class RecordProblem(ValueError):
    """A problem found inside one record before its file and line are known."""

    def __init__(self, field: str | None, expectation: str):
        self.field = field
        self.expectation = expectation
        super().__init__(f"{field}: {expectation}" if field else expectation)

    def at(self, path: str | Path, line: int) -> BadRecordError:
        return BadRecordError(path, line, self.field, self.expectation)
