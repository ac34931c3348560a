"""A failing run reports itself even when the disk is full: the console line and a closed W&B run, no error.log."""

from __future__ import annotations

import errno
import logging

import pytest
from hydra import compose, initialize_config_dir

from wiseft_lab.cli import config_dir
from wiseft_lab.pipeline import run as run_module


class RecordingLogger:
    url = directory = None

    def __init__(self):
        self.closed: list[int] = []

    def close(self, exit_code: int = 0) -> None:
        self.closed.append(exit_code)


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_out_of_disk_still_reports_the_failure_and_closes_the_logger(tmp_path, monkeypatch, caplog):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["smoke=tiny", "logger=none", f"paths.output_dir={tmp_path}"])
    logger = RecordingLogger()
    monkeypatch.setattr(run_module, "write_run_info", lambda *args, **kwargs: {"versions": {}})
    monkeypatch.setattr(run_module, "create_logger", lambda *args, **kwargs: logger)
    monkeypatch.setattr(run_module, "run_stages", full_disk)        # the stage's write fails ...
    monkeypatch.setattr(run_module, "create_exclusive", full_disk)  # ... and so does error.log
    with caplog.at_level(logging.ERROR), pytest.raises(OSError, match="No space left"):
        run_module.run(cfg)
    assert "Run failed: [Errno 28] No space left on device" in caplog.text
    assert "the traceback could not be saved" in caplog.text
    assert logger.closed == [1]
    assert not (tmp_path / "run.lock").exists()
