"""experiment=b2n smoke=tiny through the console entry point: a seed sweep, base/novel/HM rows, the report table."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from tests.conftest import run_cli
from wiseft_lab.reporting.base_to_novel import report

pytestmark = pytest.mark.slow


def test_b2n_smoke_sweep_and_report(tmp_path):
    run_cli("experiment=b2n", "smoke=tiny", "data=synthetic", "logger=none", "seed=1,2", cwd=tmp_path,
            multirun=True)
    sweep = next(tmp_path.glob("outputs/multirun/b2n_clipfit/*"))
    jobs = sorted(p.parent for p in sweep.glob("*/results.jsonl"))
    assert len(jobs) == 2
    for job in jobs:
        rows = [json.loads(x) for x in (job / "results.jsonl").read_text().splitlines()]
        assert [r["model"] for r in rows] == ["zeroshot", "finetuned"]
        for row in rows:
            assert row["n/base"] == row["n/novel"] == 10  # 5 classes x 2 test images each (smoke=tiny)
            assert row["hm/top1"] == pytest.approx(
                2 * row["base/top1"] * row["novel/top1"] / max(row["base/top1"] + row["novel/top1"], 1e-12))
        meta = json.loads((job / "checkpoints/finetuned/meta.json").read_text())
        assert meta["classnames"] == ["circle", "square", "triangle", "star", "heart"]
        assert meta["templates"] == ["a photo of a {}."] and meta["head"] == "text" and meta["method"] == "clipfit"
        with safe_open(job / "checkpoints/finetuned/model.safetensors", "pt") as handle:
            assert "clip.transformer.resblocks.0.mlp.c_proj.bias" in handle.keys()
        assert "trainable tensors\t14" in (job / "trainable_parameters.txt").read_text()
    table = report(sweep).read_text()
    assert "| synthetic_photo | 1,2 |" in table and "**average** (1)" in table
    assert (sweep / "base_to_novel.json").is_file()
