"""The console of a run that is not on a terminal (a log file, CI): our lines only, one per evaluated model."""

from __future__ import annotations

import re

import pytest

from tests.conftest import only_run_dir, run_cli

pytestmark = pytest.mark.slow

FILE_LINE = re.compile(r"^\[[\d\- :,]+\]\[(?P<name>[\w.]+)\]\[(?P<level>[A-Z]+)\] - (?P<message>.*)$")
OWN = ("wiseft_lab", "hydra", "__main__")


def third_party_info(log_text: str) -> list[str]:
    """The INFO messages of other libraries in a run's log file (``<run dir>/wiseft_lab.log`` keeps every line)."""
    out = []
    for line in log_text.splitlines():
        match = FILE_LINE.match(line)
        if match and match["level"] == "INFO" and match["name"].split(".")[0] not in OWN:
            out.append(match["message"])
    return out


def test_the_console_is_quiet_and_the_log_file_keeps_everything(tmp_path):
    proc = run_cli("smoke=tiny", "merge.alphas=[0,0.5,1]", cwd=tmp_path, env={"WANDB_SILENT": None})
    console = proc.stdout + proc.stderr
    run_dir = only_run_dir(tmp_path)
    hidden = third_party_info((run_dir / "wiseft_lab.log").read_text())
    assert any("Parsing model identifier" in m for m in hidden)  # open_clip did log: it went to the file only
    assert not [m for m in hidden if m in console]
    assert "\r" not in console and "batch/s" not in console and not re.search(r"^wandb:", console, re.M)
    evaluated = re.findall(r"^\[[\d:]+\]\[INFO\] (zeroshot|finetuned|wiseft alpha=[\d.]+):", console, re.M)
    assert evaluated == ["zeroshot", "finetuned", "wiseft alpha=0", "wiseft alpha=0.5", "wiseft alpha=1"]
    assert "epoch 1/1: loss" in console and "W&B run " in console


def test_verbose_brings_the_detail_back(tmp_path):
    proc = run_cli("smoke=tiny", "stages=[]", "verbose=true", cwd=tmp_path, env={"WANDB_SILENT": None})
    assert "Parsing model identifier" in proc.stdout + proc.stderr


def test_a_failure_is_one_message_with_the_traceback_in_error_log(tmp_path):
    proc = run_cli("smoke=tiny", "logger=none", "stages=[merge]", cwd=tmp_path, check=False)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 1 and console.count("Run failed:") == 1
    assert "Traceback" not in console and "HYDRA_FULL_ERROR" not in console
    assert "Traceback" in (only_run_dir(tmp_path) / "error.log").read_text()


def test_help_describes_the_app_its_groups_and_examples(tmp_path):
    shown = run_cli("--help", cwd=tmp_path).stdout
    assert shown.startswith("wiseft-lab: robust fine-tuning of zero-shot models")
    assert "finetune: bitfit, clipfit, e2e, flyp, lc, lpft" in shown and "merge: " in shown
    examples = shown.split("== Examples ==")[1].split("\n\n")[0].strip().splitlines()
    assert len(examples) == 5 and all(line.lstrip().startswith("wiseft-lab") for line in examples)
