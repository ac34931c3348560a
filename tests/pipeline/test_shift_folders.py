"""Own shift folders through the command line: the short form, and a renamed-class folder refused before training."""

from __future__ import annotations

import json

import pytest

from tests.conftest import only_run_dir, run_cli
from tests.data_fakes import class_tree
from wiseft_lab.data.synthetic import CLASSNAMES

pytestmark = pytest.mark.slow
FOLDERS = [name.replace(" ", "_") for name in CLASSNAMES]


def test_a_renamed_class_folder_is_refused_before_training(tmp_path):
    renamed = [f"{chr(ord('a') + i)}_{name}" for i, name in enumerate(FOLDERS)]   # a_circle, b_square, ...
    class_tree(tmp_path / "night", renamed)
    proc = run_cli("smoke=tiny", "logger=none", f"eval.shifts={{night: {tmp_path / 'night'}}}", cwd=tmp_path / "run",
                   check=False)
    shown = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in shown
    assert "'night' has classes the model's head does not know: a circle, b square" in shown
    assert "The head's classes it lacks: arrow, circle" in shown
    assert not list((tmp_path / "run").glob("outputs/*/runs/*/checkpoints"))   # nothing trained or saved
    assert not list((tmp_path / "run").glob("outputs/*/runs/*/results.jsonl"))


def test_short_form_shift_folders_with_a_mapping_and_a_subset(tmp_path):
    class_tree(tmp_path / "night", [f"x_{f}" for f in FOLDERS])
    class_tree(tmp_path / "few" / "test", FOLDERS[:3])
    mapping = ", ".join(f"x_{f}: {f}" for f in FOLDERS)
    run_cli("smoke=tiny", "logger=none",
            f"eval.shifts={{night: {{root: {tmp_path / 'night'}, classnames: {{{mapping}}}}}, "
            f"few: {{root: {tmp_path / 'few'}, partial_classes: true}}}}", cwd=tmp_path / "run")
    rows = [json.loads(line) for line in (only_run_dir(tmp_path / "run") / "results.jsonl").read_text().splitlines()]
    assert all({"night/top1", "few/top1", "avg_shifts/top1"} <= set(row) for row in rows)
    assert rows[0]["n/night"] == 10 and rows[0]["n/few"] == 3
