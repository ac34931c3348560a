"""The methods through the console entry point: CLIPFit composed with WiSE-FT, and the dry run on a full-size
architecture with random weights."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from tests.conftest import only_run_dir, run_cli

pytestmark = pytest.mark.slow


def test_clipfit_with_wiseft(tmp_path):
    run_cli("smoke=tiny", "logger=none", "finetune=clipfit", "finetune.epochs=2", "optimizer.lr=0.5",
            "merge.alphas=[0,0.5,1]", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["model"], r["alpha"]) for r in rows] == [
        ("zeroshot", 0.0), ("finetuned", 1.0), ("wiseft", 0.0), ("wiseft", 0.5), ("wiseft", 1.0)]
    assert rows[2]["photo/top1"] == rows[0]["photo/top1"] and rows[4]["photo/top1"] == rows[1]["photo/top1"]
    with safe_open(run_dir / "checkpoints/zeroshot/model.safetensors", "pt") as zs, \
            safe_open(run_dir / "checkpoints/finetuned/model.safetensors", "pt") as ft:
        changed = {k for k in zs.keys() if not (zs.get_tensor(k) == ft.get_tensor(k)).all()}
    trainable = [line.split("\t")[0] for line in (run_dir / "trainable_parameters.txt").read_text().splitlines()
                 if line.startswith(("clip.", "head."))]
    assert len(trainable) == 14 and changed == set(trainable) | {"head.weight"}
    meta = json.loads((run_dir / "checkpoints/finetuned/meta.json").read_text())
    assert meta["keep_text"] and meta["head"] == "text" and meta["templates"] == ["a photo of a {}."]


def test_dry_run_counts_bitfit_on_vit_b_16(tmp_path):
    proc = run_cli("smoke=tiny", "logger=none", "finetune=bitfit", "model=vit_b_16", "model.pretrained=null",
                   "stages=[]", cwd=tmp_path)
    report = (only_run_dir(tmp_path) / "trainable_parameters.txt").read_text().splitlines()
    assert "trainable in image tower\t74 tensors\t102912" in report
    assert "trainable in text tower\t73 tensors\t68096" in report
    assert "trainable in head\t1 tensors\t10" in report
    assert "trainable tensors\t148" in report and "trainable parameters\t171018" in report
    assert not list(only_run_dir(tmp_path).glob("checkpoints"))
    assert "Trainable: 171,018 of " in proc.stdout + proc.stderr  # the console line; every tensor in the file
