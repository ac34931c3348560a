"""A bad image names its file; ``data.skip_corrupt=true`` drops unreadable training images and counts them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from wiseft_lab.cli import config_dir
from wiseft_lab.data.base import TaskData
from wiseft_lab.data.datasets import CorruptImageError, ImageList, readable_subset
from wiseft_lab.errors import console_message
from wiseft_lab.pipeline.context import RunContext
from wiseft_lab.reporting.loggers import NullLogger


def image_tree(root: Path, truncated: str = "train/b/1.jpg") -> Path:
    for split in ("train",):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), "red" if name == "a" else "blue").save(root / split / name / f"{i}.jpg")
    bad = root / truncated
    bad.write_bytes(bad.read_bytes()[:200])
    return bad


def test_a_truncated_image_fails_naming_the_file(tmp_path):
    bad = image_tree(tmp_path)
    data = ImageList([(str(bad), 0)])
    with pytest.raises(CorruptImageError, match=f"^{bad}: cannot be decoded .*data.skip_corrupt=true"):
        data[0]


def test_readable_subset_drops_and_reports_the_unreadable(tmp_path):
    bad = image_tree(tmp_path)
    samples = sorted((str(p), int(p.parent.name == "b")) for p in tmp_path.rglob("*.jpg"))
    kept, skipped = readable_subset(TaskData(ImageList(samples), ["a", "b"]))
    assert len(kept.dataset) == 5 and kept.dataset.targets.tolist() == [0, 0, 0, 1, 1]
    assert len(skipped) == 1 and skipped[0].startswith(f"{bad}: cannot be decoded")


def test_skip_corrupt_is_off_by_default_and_counted_in_run_info(tmp_path):
    image_tree(tmp_path / "data")
    overrides = ["~experiment", "model=tiny_random", "data=folder", f"data.dataset.root={tmp_path / 'data'}",
                 "logger=none"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        strict = compose(config_name="train", overrides=overrides)
        skipping = compose(config_name="train", overrides=[*overrides, "data.skip_corrupt=true"])
    assert strict.data.skip_corrupt is False
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run_info.json").write_text(json.dumps({"seed": 0}))
    task = RunContext.build(skipping, run_dir, NullLogger(), torch.device("cpu"), "fp32").task()
    assert len(task.train.dataset) == 5
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["seed"] == 0 and info["skipped_images"]["count"] == 1
    assert len(RunContext.build(strict, run_dir, NullLogger(), torch.device("cpu"), "fp32").task().train.dataset) == 6


def test_a_bad_image_in_a_loader_worker_still_reads_as_one_line(tmp_path):
    bad = image_tree(tmp_path)
    loader = torch.utils.data.DataLoader(ImageList([(str(bad), 0)]), num_workers=1)
    with pytest.raises(CorruptImageError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)  # torch's re-raise carries the worker's traceback
    assert console_message(caught.value).startswith(f"{bad}: cannot be decoded")
