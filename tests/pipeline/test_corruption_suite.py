"""The demo with a corruption suite generated on the fly: one override (the README's command), at smoke size."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import only_run_dir, run_cli

pytestmark = pytest.mark.slow


def test_the_demo_adds_generated_corruptions_with_one_override(tmp_path):
    run_cli("smoke=tiny", "logger=none", "+eval/corruptions=generated", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    row = json.loads((run_dir / "results.jsonl").read_text().splitlines()[0])
    pairs = [k for k in row if re.fullmatch(r"corrupted_[a-z_]+_[1-5]/top1", k)]
    assert len(pairs) == 12 * 5 and row["n/corrupted_fog_3"] == 20   # 12 corruptions x 5 severities of the photos
    assert row["corrupted_fog/top1"] == pytest.approx(sum(row[f"corrupted_fog_{s}/top1"] for s in range(1, 6)) / 5)
    shifts = ["sketch", "cartoon", "painting", "clutter", "corrupted"]
    assert row["avg_shifts/top1"] == pytest.approx(sum(row[f"{s}/top1"] for s in shifts) / 5)
    assert "| photo (ref) | sketch | cartoon | painting | clutter | corrupted | avg shifts |" in (
        run_dir / "summary.md").read_text()
