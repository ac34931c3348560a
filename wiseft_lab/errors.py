"""Errors whose message already says what went wrong and how to fix it."""

from __future__ import annotations


class UserFacingError(Exception):
    """The command line prints these as their message alone (the traceback still goes to the run's error.log)."""
