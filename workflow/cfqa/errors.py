"""The one base class of "the input is wrong" errors.

An error that derives from BadInput means the configuration, an input file or its contents is
wrong, or the settings do not fit this machine: the CLI prints its message on one line and
exits 2, without a traceback. Every other error is a failure of the code (exit 1, traceback).
This module imports nothing, so every module may derive from it without pulling in code."""
from __future__ import annotations


class BadInput(Exception):
    """Configuration, input files or settings the user must change (CLI exit 2)."""
