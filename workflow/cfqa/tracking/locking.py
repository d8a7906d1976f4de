"""Many jobs, one store: parallel jobs write one SQLite file, so the store and the
experiment are created under a file lock, and every write is retried with backoff when
SQLite answers "database is locked". An insert that lost a race with an identical one
(a unique-constraint conflict) is recognised here too.
"""
from __future__ import annotations

import contextlib
import random
import time
from typing import Callable, Iterator, TypeVar

from filelock import FileLock

from cfqa.io.logs import get_logger
from cfqa.tracking.store import sqlite_database_path

log = get_logger(__name__)
T = TypeVar("T")

LOCK_ATTEMPTS = 8
LOCK_FIRST_DELAY_S = 0.2
# How each database names a broken unique constraint: SQLite, PostgreSQL, MySQL/MariaDB.
_UNIQUE_CONFLICT = ("UNIQUE constraint failed", "violates unique constraint", "Duplicate entry")


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialises creating the database (schema migrations) and the experiment across
    processes; writes after that rely on SQLite's own locking plus retries."""
    database = sqlite_database_path(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(database) + ".lock", timeout=120):
        yield


def is_database_locked(error: BaseException) -> bool:
    """True if the error, or any error it was raised from, is SQLite's lock contention."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if "database is locked" in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def with_lock_retry(action: Callable[[], T], what: str, attempts: int = LOCK_ATTEMPTS,
                    first_delay_s: float = LOCK_FIRST_DELAY_S) -> T:
    """`action()`, retried with exponential backoff and jitter while the database is locked."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:  # MLflow wraps SQLAlchemy's OperationalError in its own type
            if attempt == attempts or not is_database_locked(error):
                raise
            delay = first_delay_s * 2 ** (attempt - 1) * (1 + random.random())
            log.warning("%s: database is locked (attempt %d/%d); retrying in %.1f s",
                        what, attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def is_unique_conflict(error: BaseException) -> bool:
    """True if the error, or one it was raised from, is a unique-constraint violation (an
    insert that lost a race with an identical one)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if type(current).__name__ == "IntegrityError" or any(text in str(current) for text in _UNIQUE_CONFLICT):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
