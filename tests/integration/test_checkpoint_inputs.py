"""What ``stages=[evaluate]`` / ``[merge,evaluate]`` accept: nothing (the zero-shot model of ``model.pretrained``),
and open_clip files (``epoch_N.pt`` with DDP's ``module.`` prefixes) imported as ``checkpoints.*``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TINY_ARCH, only_run_dir, run_cli
from wiseft_lab.models.factory import create_clip

pytestmark = pytest.mark.slow


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("smoke")
    run_cli("smoke=tiny", "logger=none", "merge.alphas=[0,1]", cwd=base)
    return only_run_dir(base)


@pytest.fixture(scope="module")
def epoch_file(tmp_path_factory) -> Path:
    """An open_clip training checkpoint of the smoke run's zero-shot weights (seed 0, as ``smoke=tiny`` draws them),
    laid out as open_clip_train writes it under DDP."""
    torch.manual_seed(0)
    state = create_clip(TINY_ARCH, None, load_tokenizer=False).model.state_dict()
    path = tmp_path_factory.mktemp("open_clip") / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "tiny", "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


def test_evaluating_alone_without_checkpoints_scores_the_zeroshot_model(smoke_run, tmp_path):
    run_cli("smoke=tiny", "logger=none", "stages=[evaluate]", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    rows = rows_of(run_dir)
    assert [r["model"] for r in rows] == ["zeroshot"]
    assert rows[0] == rows_of(smoke_run)[0]  # the full run's zero-shot row, number for number
    assert "| zero-shot |" in (run_dir / "summary.md").read_text()
    assert not (run_dir / "checkpoints" / "finetuned").exists()


def test_an_open_clip_epoch_file_is_evaluated_with_a_head_from_its_text_tower(smoke_run, epoch_file, tmp_path):
    run_cli("smoke=tiny", "logger=none", "stages=[evaluate]", f"checkpoints.finetuned={epoch_file}", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    rows = rows_of(run_dir)
    zeroshot = rows_of(smoke_run)[0]
    assert [r["model"] for r in rows] == ["finetuned"]
    # the same weights and the same prompts as the smoke run's zero-shot model: the same predictions
    assert {k: v for k, v in rows[0].items() if "/" in k} == {k: v for k, v in zeroshot.items() if "/" in k}
    meta = json.loads((run_dir / "checkpoints/finetuned/meta.json").read_text())
    assert meta["method"] == "imported" and meta["imported_from"] == str(epoch_file)


def test_an_open_clip_file_merges_with_a_zeroshot_checkpoint_and_takes_its_head(smoke_run, epoch_file, tmp_path):
    zeroshot = smoke_run / "checkpoints" / "zeroshot"
    run_cli("smoke=tiny", "logger=none", "stages=[merge,evaluate]", "merge.alphas=[0.5]",
            f"checkpoints.zeroshot={zeroshot}", f"checkpoints.finetuned={epoch_file}",
            "checkpoints.import_head=zeroshot", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    assert [(r["model"], r["alpha"]) for r in rows_of(run_dir)] == [("zeroshot", 0.0), ("finetuned", 1.0),
                                                                   ("wiseft", 0.5)]
    imported = load_file(run_dir / "checkpoints/finetuned/model.safetensors")
    assert torch.equal(imported["head.weight"], load_file(zeroshot / "model.safetensors")["head.weight"])

    bad = run_cli("smoke=tiny", "logger=none", "stages=[evaluate]", f"checkpoints.finetuned={epoch_file}",
                  "checkpoints.import_head=zeroshot", cwd=tmp_path / "bad", check=False)
    assert bad.returncode == 1 and "checkpoints.import_head='zeroshot'" in bad.stdout + bad.stderr
