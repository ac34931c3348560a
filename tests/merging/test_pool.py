"""The soup pool: multirun directories, globs and lists; failed jobs are skipped, saying which and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from wiseft_lab.config import ConfigError
from wiseft_lab.io import atomic_write_text, write_json, write_safetensors
from wiseft_lab.merging.pool import (
    Ingredient,
    adopt_pool_split,
    explicit_data_keys,
    pool_group,
    pool_split,
    resolve_pool,
    varying_overrides,
)


def _checkpoint(directory: Path, holdout: float | None, shape=(2, 2)) -> None:
    write_safetensors(directory / "model.safetensors", {"head.weight": torch.zeros(shape)})
    write_json(directory / "meta.json", {"arch": "x", "classnames": ["a", "b"], "templates": ["{}"],
                                         "metrics": {} if holdout is None else {"holdout/top1": holdout}})


def _sweep(root: Path, jobs: dict[int, float | None | str]) -> Path:
    """A multirun dir: job -> held-out accuracy (a checkpoint), 'failed' (error.log) or 'running' (no checkpoint)."""
    atomic_write_text(root / "multirun.yaml", "hydra: {}\n")
    for num, state in jobs.items():
        job = root / str(num)
        atomic_write_text(job / ".hydra" / "overrides.yaml",
                          OmegaConf.to_yaml(["experiment=smoke", f"optimizer.lr={num}e-5", "stages=[finetune]"]))
        atomic_write_text(job / "config.yaml", "seed: 0\n")
        _checkpoint(job / "checkpoints" / "zeroshot", None)
        if state == "failed":
            atomic_write_text(job / "error.log", "Traceback (most recent call last):\n  ...\nValueError: boom\n")
        elif state != "running":
            _checkpoint(job / "checkpoints" / "finetuned", state)
        (job / "wandb" / f"offline-run-20250101_000000-abc{num}").mkdir(parents=True)
    return root


def test_multirun_dir_in_job_order_skipping_failed_and_unfinished_jobs(tmp_path):
    sweep = _sweep(tmp_path / "2025-01-01_00-00-00", {0: 0.5, 1: "failed", 2: 0.7, 3: "running", 10: 0.6})
    (sweep / "wandb" / "offline-run-20250101_000000-sweep").mkdir(parents=True)  # the sweep summary's W&B run
    pool, skipped = resolve_pool(str(sweep))
    assert [i.name for i in pool] == ["0", "2", "10"]  # numeric job order
    assert [i.holdout for i in pool] == [0.5, 0.7, 0.6]
    assert pool[0].checkpoint == sweep / "0" / "checkpoints" / "finetuned" and pool[0].run_dir == sweep / "0"
    assert pool[1].wandb_run == "abc2" and "optimizer.lr=2e-5" in pool[1].overrides
    reasons = {Path(s["source"]).name: s["reason"] for s in skipped}
    assert set(reasons) == {"1", "3"}
    assert "failed (ValueError: boom)" in reasons["1"] and str(sweep / "1" / "error.log") in reasons["1"]
    assert "no checkpoints/finetuned" in reasons["3"]
    assert varying_overrides(pool) == {"0": "optimizer.lr=0e-5", "2": "optimizer.lr=2e-5", "10": "optimizer.lr=10e-5"}
    zeroshot, _ = resolve_pool(str(sweep), checkpoint="zeroshot")
    assert [i.name for i in zeroshot] == ["0", "1", "2", "3", "10"]


def test_globs_lists_and_unique_names(tmp_path):
    a = _sweep(tmp_path / "a", {0: 0.1, 1: 0.2})
    b = _sweep(tmp_path / "b", {0: 0.3})
    pool, skipped = resolve_pool(str(tmp_path / "*" / "*" / "checkpoints" / "finetuned"))
    assert [i.name for i in pool] == ["a/0", "a/1", "b/0"] and not skipped  # job names clash: parents added
    pool, skipped = resolve_pool([str(a / "1"), str(b / "0" / "checkpoints" / "finetuned" / "model.safetensors"),
                                  str(a / "1" / "checkpoints" / "finetuned"), str(tmp_path / "missing"),
                                  str(tmp_path / "nothing*")])
    assert [i.name for i in pool] == ["1", "0"]  # a duplicate is taken once
    assert [s["reason"] for s in skipped] == ["does not exist", "the glob matches nothing"]
    both, _ = resolve_pool(OmegaConf.create([str(a), str(b)]))
    assert [i.name for i in both] == ["a/0", "a/1", "b/0"]
    with pytest.raises(ValueError, match="merge.pool is not set"):
        resolve_pool(None)


def test_soup_runs_join_their_sweeps_wandb_group(tmp_path):
    sweep = _sweep(tmp_path / "2025-01-01_00-00-00", {0: 0.5})
    cfg = OmegaConf.create({"merge": {"kind": "soups", "pool": str(sweep)}})
    assert pool_group(cfg) == "2025-01-01_00-00-00"
    assert pool_group(OmegaConf.create({"merge": {"kind": "wiseft"}})) is None
    assert pool_group(OmegaConf.create({"merge": {"kind": "soups", "pool": [str(sweep)]}})) is None


def _with_data(name: str, tmp_path, **data) -> Ingredient:
    base = {"dataset": {"n_per_class": 4}, "holdout_fraction": 0.25, "num_workers": 0}
    return Ingredient(name, tmp_path, 0.5, meta_config={"data": {**base, **data}})


def test_a_pool_split_is_the_one_its_ingredients_share(tmp_path):
    split = pool_split([_with_data("a", tmp_path), _with_data("b", tmp_path, num_workers=4)])
    assert split == {"dataset": {"n_per_class": 4}, "classes": None, "holdout_fraction": 0.25, "holdout_seed": 0}
    assert pool_split([Ingredient("plain", tmp_path, None)]) is None
    with pytest.raises(ConfigError, match=r"different held-out splits: a with data.holdout_fraction=0.25, "
                                          r"b with data.holdout_fraction=0.02"):
        pool_split([_with_data("a", tmp_path), _with_data("b", tmp_path, holdout_fraction=0.02)])


def test_explicit_data_keys_of_a_command_line():
    assert explicit_data_keys(["data=imagenet", "data.holdout_fraction=0.1", "data.dataset.root=/x",
                               "data.num_workers=0", "seed=1"]) == {"dataset", "classes", "holdout_fraction"}


def test_a_soup_run_takes_its_pools_split_and_refuses_an_explicit_other(tmp_path):
    sweep = _sweep(tmp_path / "sweep", {0: 0.5, 1: 0.6})
    for job in ("0", "1"):
        meta_path = sweep / job / "checkpoints" / "finetuned" / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["config"] = {"data": {"dataset": {"n_per_class": 4}, "holdout_fraction": 0.25, "holdout_seed": 3}}
        meta_path.write_text(json.dumps(meta))
    cfg = OmegaConf.create({"merge": {"kind": "soups", "pool": str(sweep)},
                            "data": {"dataset": {"n_per_class": 200}, "holdout_fraction": 0.05, "num_workers": 2}})
    adopted = adopt_pool_split(cfg, ["experiment=soups"])
    assert OmegaConf.to_container(adopted.data) == {"dataset": {"n_per_class": 4}, "holdout_fraction": 0.25,
                                                    "num_workers": 2, "holdout_seed": 3}
    assert cfg.data.holdout_fraction == 0.05  # the given config is left as it is
    with pytest.raises(ConfigError, match=r"sets data.holdout_fraction=0.05, but its pool's ingredients were "
                                          r"fine-tuned with data.holdout_fraction=0.25"):
        adopt_pool_split(cfg, ["data.holdout_fraction=0.05"])
    cfg.merge.rescore_holdout = True
    assert adopt_pool_split(cfg, ["data.holdout_fraction=0.05"]).data.holdout_fraction == 0.05
    wiseft = OmegaConf.create({"merge": {"kind": "wiseft"}, "data": {"holdout_fraction": 0.0}})
    assert adopt_pool_split(wiseft, []) is wiseft
