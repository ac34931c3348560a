"""Errors whose message already says what went wrong and how to fix it."""

from __future__ import annotations


class UserFacingError(Exception):
    """The command line prints these as their message alone (the traceback still goes to the run's error.log)."""


def console_message(err: BaseException) -> str:
    """The error's message; for one re-raised from a DataLoader worker (torch puts the worker's traceback in the
    message), its last line, so a user-facing error still reads as one line."""
    text = str(err)
    if "Original Traceback" in text:  # its last line is "<module>.<Class>: <message>"
        return text.strip().splitlines()[-1].split(": ", 1)[-1]
    return text
