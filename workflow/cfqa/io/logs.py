"""Stage logging: one format for every stage. Messages go to stderr and, with --log-file, to
that file; tracebacks go only to the file, so the terminal (and Snakemake's job output)
shows one line per problem. Every record passes through cfqa.io.redact, tracebacks included, so a
password in a URL (a tracking URI, a request an error names) never reaches a terminal or a file."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from cfqa.io.redact import redact

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


class RedactingFormatter(logging.Formatter):
    """The standard format, traceback included, with credentials in URLs masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class OneLineFormatter(RedactingFormatter):
    """Formats a record without its traceback or stack, newlines folded: one line each."""

    def format(self, record: logging.LogRecord) -> str:
        plain = logging.makeLogRecord(record.__dict__)
        plain.exc_info, plain.exc_text, plain.stack_info = None, None, None
        return " ".join(super().format(plain).split("\n"))


def setup_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(OneLineFormatter(FORMAT, DATE_FORMAT))
    handlers: list[logging.Handler] = [terminal]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, mode="w", encoding="utf-8")
        file_handler.setFormatter(RedactingFormatter(FORMAT, DATE_FORMAT))
        handlers.append(file_handler)
    logging.basicConfig(level=level, handlers=handlers, force=True)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
