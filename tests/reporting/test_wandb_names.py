"""W&B job types, names, tags and groups from the stages and a sweep's overrides."""

from __future__ import annotations

from omegaconf import OmegaConf

from wiseft_lab.reporting.wandb_names import (
    group_name,
    job_type,
    run_name,
    run_tags,
    swept_keys,
    varying_overrides,
)


def test_the_job_type_says_what_the_run_made():
    assert job_type(["finetune", "merge", "evaluate"], "wiseft") == "finetune"
    assert job_type([], "wiseft") == "finetune"
    assert job_type(["merge", "evaluate"], "wiseft") == "merge"
    assert job_type(["merge", "evaluate"], "soups") == "soup"
    assert job_type(["evaluate"], "soups") == "evaluate"


def test_swept_keys_and_this_jobs_values_name_the_run():
    keys = swept_keys(["smoke=tiny", "optimizer.lr=1e-4,3e-4", "seed=range(2)", "stages=[finetune]"],
                      {"finetune.label_smoothing": "0,0.1"})
    assert keys == ["optimizer.lr", "seed", "finetune.label_smoothing"]
    varying = varying_overrides(["smoke=tiny", "optimizer.lr=3e-4", "seed=1", "+finetune.label_smoothing=0.1"], keys)
    assert varying == ["optimizer.lr=3e-4", "seed=1", "finetune.label_smoothing=0.1"]
    assert run_name("demo", "finetune", varying[:2], "3") == "demo finetune optimizer.lr=3e-4 seed=1"
    assert run_name("demo", "evaluate", [], "2026-01-01_12-00-00") == "demo evaluate 2026-01-01_12-00-00"


def test_tags_are_the_configured_the_swept_and_the_choices_once_each():
    tags = run_tags(["seed=1"], {"experiment": "demo", "model": None, "finetune": "e2e"}, ["mine", "seed=1"])
    assert tags == ["mine", "seed=1", "experiment=demo", "finetune=e2e"]
    assert max(map(len, run_tags(["x=" + "9" * 100], {}))) == 64


def test_a_sweeps_group_names_its_task_and_keys_and_stays_unique(tmp_path):
    sweep = tmp_path / "2026-01-01_12-00-00"
    sweep.mkdir()
    assert group_name(sweep) == "2026-01-01_12-00-00"  # no multirun.yaml: the directory's name
    OmegaConf.save(OmegaConf.create({"task_name": "soups", "hydra": {
        "overrides": {"task": ["experiment=soups", "seed=0,1", "optimizer.lr=1e-4,3e-4"]}}}), sweep / "multirun.yaml")
    assert group_name(sweep) == "soups: seed x optimizer.lr (2026-01-01_12-00-00)"
