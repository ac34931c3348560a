"""Resume planning and its config check, input architectures, and the lock that lets one of two resumes through."""

from __future__ import annotations

import json

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from wiseft_lab.cli import config_dir
from wiseft_lab.config import ConfigError
from wiseft_lab.models.checkpoint import CheckpointError
from wiseft_lab.pipeline.guards import (
    ResumePlan,
    adopt,
    check_input_architectures,
    check_resume_config,
    math_diff,
    plan_resume,
    preflight,
    refuse_finished_in_place,
)
from wiseft_lab.runlock import RunLockedError
from wiseft_lab.training.loop import find_interrupted_run


def composed(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=["smoke=tiny", "logger=none", *overrides])


def fake_run(run_dir, cfg, epochs=(1,), finished=False, arch="wiseft-tiny-vit", precision="fp32"):
    """A run dir as a run leaves it: config.yaml, run_info.json, epoch checkpoints (a meta.json and dummy weights)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / "run_info.json").write_text(json.dumps({"precision": precision}))
    names = [f"epoch_{e:03d}" for e in epochs] + (["finetuned"] if finished else [])
    for name in names:
        ckpt = run_dir / "checkpoints" / name
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(b"weights")
        (ckpt / "meta.json").write_text(json.dumps({"arch": arch, "classnames": ["a"], "templates": ["{}"]}))
        if name.startswith("epoch_"):
            (ckpt / "trainer_state.json").write_text(json.dumps({"step": int(name[6:]) * 10}))
    return run_dir


def test_math_diff_ignores_what_does_not_change_the_numbers():
    saved = {"finetune": {"epochs": 1, "keep_checkpoints": 1}, "data": {"num_workers": 2}, "eval": {"batch_size": 8}}
    requested = {"finetune": {"epochs": 2, "keep_checkpoints": 3}, "data": {"num_workers": 0},
                 "eval": {"batch_size": 4}, "optimizer": {"lr": 0.1}}
    assert math_diff(saved, requested) == [("finetune.epochs", 1, 2), ("optimizer.lr", None, 0.1)]


def test_a_changed_resume_is_refused_with_a_short_diff_unless_allowed(tmp_path):
    source = fake_run(tmp_path / "runs/a", composed())
    plan = ResumePlan(source, source / "checkpoints/epoch_001", in_place=False)
    changed = composed("finetune.epochs=6", "optimizer.lr=0.5", "data.num_workers=3")
    with pytest.raises(ConfigError) as caught:
        check_resume_config(plan, changed, "fp32")
    assert str(caught.value).splitlines()[1:] == [
        "  optimizer.lr: 0.001 -> 0.5", "  finetune.epochs: 1 -> 6",
        "Use the saved values, or allow the change: resume_allow=[optimizer.lr,finetune.epochs]"]
    with pytest.raises(ConfigError, match="resolved_precision: 'fp32' -> 'bf16'"):
        check_resume_config(plan, composed(), "bf16")
    allowed = composed("finetune.epochs=6", "optimizer.lr=0.5", "resume_allow=[finetune.epochs,optimizer]")
    assert check_resume_config(plan, allowed, "fp32") == [("optimizer.lr", 0.001, 0.5), ("finetune.epochs", 1, 6)]


def test_resume_true_finds_the_interrupted_run_and_never_a_finished_or_continued_one(tmp_path):
    cfg = composed("resume=true")
    fake_run(tmp_path / "runs/1-finished", cfg, finished=True)
    interrupted = fake_run(tmp_path / "runs/2-interrupted", cfg, epochs=(1, 2))
    me = tmp_path / "runs/3-me"
    plan = plan_resume(cfg, me, multirun=False)
    assert plan == ResumePlan(interrupted, interrupted / "checkpoints/epoch_002", in_place=False)
    before = sorted(p.relative_to(interrupted) for p in interrupted.rglob("*"))
    adopt(plan, me / "checkpoints")
    assert sorted(p.relative_to(interrupted) for p in interrupted.rglob("*")) == before  # only read
    assert (me / "checkpoints/epoch_002/model.safetensors").read_bytes() == b"weights"
    assert find_interrupted_run(tmp_path / "runs", exclude=tmp_path / "runs/4-later") == me  # me, not 2 again


def test_a_finished_run_is_never_continued_in_place(tmp_path):
    run = fake_run(tmp_path / "runs/done", composed(), finished=True)
    completed, stopped = {"status": "completed"}, {"status": "preempted"}
    for cfg in (composed(f"resume={run}"), composed(f"resume={run}/checkpoints"), composed("resume=true")):
        with pytest.raises(ConfigError, match="holds a finished run, which is never modified"):
            refuse_finished_in_place(cfg, run, completed)
        with pytest.raises(ConfigError, match="holds a finished run"):  # no job.json: the fine-tuned model tells
            refuse_finished_in_place(cfg, run, None)
        refuse_finished_in_place(cfg, run, stopped)  # stopped after fine-tuning (e.g. while evaluating): continues
        assert plan_resume(cfg, run, multirun=False).in_place is True
    new = tmp_path / "runs/new"
    refuse_finished_in_place(composed(f"resume={run}"), new, None)
    assert plan_resume(composed(f"resume={run}"), new, multirun=False).in_place is False


def test_of_two_jobs_resuming_one_run_one_goes_on(tmp_path):
    cfg = composed("resume=true")
    source = fake_run(tmp_path / "runs/1", cfg)
    plan, lock = preflight(cfg, tmp_path / "runs/2", "fp32", multirun=False)
    try:
        assert plan.source == source and lock.held
        with pytest.raises(RunLockedError, match=f"{source} is locked by pid .* \\(resumed by {tmp_path}/runs/2\\)"):
            preflight(cfg, tmp_path / "runs/3", "fp32", multirun=False)
    finally:
        lock.release()


def test_checkpoints_of_another_architecture_fail_before_any_stage(tmp_path):
    a = fake_run(tmp_path / "a", composed(), finished=True) / "checkpoints/finetuned"
    b = fake_run(tmp_path / "b", composed(), finished=True, arch="ViT-B-32") / "checkpoints/finetuned"
    cfg = composed("stages=[merge,evaluate]", f"checkpoints.zeroshot={a}", f"checkpoints.finetuned={b}")
    with pytest.raises(CheckpointError, match=f"checkpoints.finetuned={b} is a ViT-B-32 checkpoint, but this run's "
                                              "model is wiseft-tiny-vit"):
        check_input_architectures(cfg, ["merge", "evaluate"], None)
    plan = ResumePlan(b.parent.parent.parent, b.parent / "epoch_001", in_place=False)
    with pytest.raises(CheckpointError, match="resume=.*epoch_001 is a ViT-B-32 checkpoint"):
        check_input_architectures(composed(), ["finetune"], plan)


def test_saved_configs_are_plain_yaml(tmp_path):
    run = fake_run(tmp_path / "r", composed())
    assert yaml.safe_load((run / "config.yaml").read_text())["finetune"]["epochs"] == 1
