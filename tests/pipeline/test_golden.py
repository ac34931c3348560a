"""One golden run: ``wiseft-lab smoke=tiny precision=fp32`` on the CPU. A change anywhere in the numbers (data,
splits, head, loss, schedule, merge, evaluation) shows here; update the values only for a change that is meant."""

from __future__ import annotations

import json

import pytest

from tests.conftest import only_run_dir, run_cli

pytestmark = pytest.mark.slow

FIRST_EPOCH_LOSS = 2.326152801513672  # train/epoch_loss of epoch 1 (global batches, augmentations seeded per example)
TOP1 = {  # model: (photo/top1, avg_shifts/top1), of 20 and 80 test images
    "zeroshot": (2 / 20, 9 / 80),
    "finetuned": (2 / 20, 10 / 80),
}


def test_the_smoke_runs_numbers_are_pinned(tmp_path):
    run_cli("smoke=tiny", "precision=fp32", "logger=none", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    state = json.loads((run_dir / "checkpoints/epoch_001/trainer_state.json").read_text())
    assert state["metrics"]["train/epoch_loss"] == pytest.approx(FIRST_EPOCH_LOSS, rel=1e-5)
    rows = {r["model"]: r for r in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())
            if r["model"] in TOP1}
    for model, (photo, shifts) in TOP1.items():
        assert (rows[model]["photo/top1"], rows[model]["avg_shifts/top1"]) == pytest.approx((photo, shifts)), model
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["precision"] == "fp32" and info["device"] == "cpu"
