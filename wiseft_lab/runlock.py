"""Run locks: one job at a time writes into a run directory.

``run.lock`` holds the host and pid of the job that owns the directory. It appears complete or not at all (written
to a temporary file, then hard-linked into place, which fails if the lock exists), so two jobs starting at once
cannot both take it. A lock whose process is gone (same host, pid not alive) is stale: it is taken over with a
message. A lock held by a live process, or by another host (whose processes cannot be checked from here), refuses
the second job, saying how to go on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from wiseft_lab.errors import UserFacingError
from wiseft_lab.io import create_exclusive

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"


class RunLockedError(UserFacingError, RuntimeError):
    """Another live job writes into this run directory."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(path: Path) -> dict | None:
    """The lock's record, or None when there is no lock (or it vanished while being read)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as held by an unknown job


def holder_is_gone(record: dict) -> bool:
    return record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int) \
        and not pid_alive(record["pid"])


class RunLock:
    """``with RunLock(run_dir, purpose):`` holds ``run_dir/run.lock`` for the block (released even on failure)."""

    def __init__(self, run_dir: str | Path, purpose: str = "run"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.purpose = purpose
        self.held = False

    def acquire(self) -> RunLock:
        record = {"host": socket.gethostname(), "pid": os.getpid(), "purpose": self.purpose}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # a stale lock is removed, then the lock is taken again (others may race for it)
            if self._link(record):
                return self
            holder = read_lock(self.path)
            if holder is not None and not holder_is_gone(holder):
                raise RunLockedError(
                    f"{self.run_dir} is locked by {describe(holder)}: another job is writing into it. Wait for it, "
                    f"or choose another directory (hydra.run.dir=...). If that job is gone, delete {self.path}.")
            if holder is not None:
                self._remove_stale(holder)
        raise RunLockedError(f"{self.run_dir}: could not take {self.path} (other jobs keep racing for it)")

    def _link(self, record: dict) -> bool:
        """Put a complete lock file in place unless one exists."""
        self.held = create_exclusive(self.path, json.dumps(record) + "\n")
        return self.held

    def _remove_stale(self, holder: dict) -> None:
        """Delete the stale lock ``holder``, unless another job replaced it meanwhile (one takes over at a time)."""
        guard = self.run_dir / f".{LOCK_FILE}.takeover"
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            time.sleep(0.05)
            return
        try:
            if read_lock(self.path) == holder:
                self.path.unlink(missing_ok=True)
                log.warning("Taking over the stale lock of %s: %s is gone", self.run_dir, describe(holder))
        finally:
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()


def describe(record: dict) -> str:
    if not record:
        return "an unknown job (unreadable lock)"
    return f"pid {record.get('pid')} on {record.get('host')} ({record.get('purpose', 'run')})"
