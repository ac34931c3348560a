"""Run locks: one job writes into a run dir; a dead job's lock is taken over; a live one's refuses the second job."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from wiseft_lab.runlock import LOCK_FILE, RunLock, RunLockedError


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(run_dir, **record):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_FILE).write_text(json.dumps(record))


def test_the_lock_names_host_and_pid_and_is_released(tmp_path):
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text()) == {"host": socket.gethostname(), "pid": os.getpid(),
                                                     "purpose": "run"}
        with pytest.raises(RunLockedError, match=f"locked by pid {os.getpid()} on {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_FILE).exists() and list(tmp_path.iterdir()) == []


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path, caplog):
    pid = dead_pid()
    write_lock(tmp_path, host=socket.gethostname(), pid=pid)
    with caplog.at_level(logging.WARNING), RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"stale lock of {tmp_path}: pid {pid}" in caplog.text


@pytest.mark.parametrize("record", [{"host": "elsewhere", "pid": 1}, {}], ids=["other-host", "unreadable"])
def test_a_lock_that_cannot_be_checked_refuses(tmp_path, record):
    write_lock(tmp_path, **record)
    with pytest.raises(RunLockedError, match=f"delete {tmp_path / LOCK_FILE}"):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == record  # left as it was


@pytest.mark.slow
def test_a_second_job_into_a_locked_run_dir_is_refused_and_writes_nothing(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run_dir = tmp_path / "outputs/demo/runs/shared"
        write_lock(run_dir, host=socket.gethostname(), pid=sleeper.pid, purpose="run")
        proc = run_cli("smoke=tiny", "logger=none", f"hydra.run.dir={run_dir}", cwd=tmp_path, check=False)
    finally:
        sleeper.kill()
        sleeper.wait()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and f"is locked by pid {sleeper.pid}" in out and "Traceback" not in out
    assert not any((run_dir / name).exists() for name in ("config.yaml", "error.log", "checkpoints"))


@pytest.mark.slow
def test_of_jobs_racing_for_one_dir_exactly_one_takes_it(tmp_path):
    """Processes released together: one holds the lock (15 s: a late starter still meets it), the others are refused."""
    script = ("import sys, time; from wiseft_lab.runlock import RunLock, RunLockedError\n"
              "go = float(sys.argv[2])\n"
              "while time.time() < go: pass\n"
              "try:\n    RunLock(sys.argv[1]).acquire(); print('took'); time.sleep(max(0.0, go + 15 - time.time()))\n"
              "except RunLockedError: print('refused')\n")
    start = str(time.time() + 8)  # after every process has imported
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), start], stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(3)]
    outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outcomes == ["refused", "refused", "took"]
