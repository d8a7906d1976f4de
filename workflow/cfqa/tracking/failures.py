"""Tracking never fails a stage.

A run's MLflow record describes the work; it is not the work. A stage whose outputs are
complete must not fail because the store could not take its record: every tracking error
past the retries becomes one warning, and the run, where it exists, is tagged with what
went wrong (and ended FAILED where it was being ended), so the UI shows it incomplete.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

from cfqa.io.logs import get_logger
from cfqa.io.redact import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = get_logger(__name__)

TRACKING_ERROR_TAG = "cfqa.tracking_error"
_MAX_TAG_CHARS = 5000   # MLflow's limit on a tag value is 8000 characters


def error_text(error: BaseException) -> str:
    """`Type: message` on one line, credentials masked."""
    text = " ".join(str(error).split()) or "(no message)"
    return redact(f"{type(error).__name__}: {text}")


def mark_tracking_error(client: MlflowClient | None, run_id: str | None, what: str, error: BaseException,
                        status: str | None = None) -> None:
    """Best effort: the run tagged `cfqa.tracking_error` = what failed and why (and ended with
    `status`, if given). The store may be what failed, so this never raises."""
    if client is None or run_id is None:
        return
    with contextlib.suppress(Exception):
        client.set_tag(run_id, TRACKING_ERROR_TAG, f"{what}: {error_text(error)}"[:_MAX_TAG_CHARS])
    if status is not None:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, status)


@contextlib.contextmanager
def failures_as_warnings(what: str) -> Iterator[None]:
    """Runs a stage's tracking: an error is logged as one warning and the stage goes on (an
    interrupt still stops it). The functions inside mark their run where they have one."""
    try:
        yield
    except Exception as error:
        log.warning("MLflow: %s failed (%s); the stage's outputs are complete and it goes on without "
                    "that record; the run, where it exists, carries the tag %s", what, error_text(error),
                    TRACKING_ERROR_TAG)
