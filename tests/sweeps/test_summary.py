"""The sweep summary's pieces: what varies, the scores of a job, the best job, ETA; hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.types import RunMode
from omegaconf import OmegaConf

from wiseft_lab.io import write_json, write_jsonl
from wiseft_lab.models.checkpoint import CheckpointMeta, save_checkpoint
from wiseft_lab.sweeps.callback import SWEEP_FILE, SweepCallback, eta_seconds, planned_jobs, progress_line
from wiseft_lab.sweeps.jobs import JOB_FILE, JobOutcome, failure_reason, finish_job, start_job
from wiseft_lab.sweeps.summary import best_job, differing, scores, sweep_markdown, sweep_rows


def test_differing_keeps_what_tells_jobs_apart_and_ignores_resume():
    jobs = [["smoke=tiny", "optimizer.lr=1", "seed=0"], ["smoke=tiny", "optimizer.lr=2", "seed=0", "resume=true"]]
    assert differing(jobs) == [["optimizer.lr=1"], ["optimizer.lr=2"]]
    assert differing([["a=1"]]) == [[]]


def test_scores_of_the_finetuned_model_wiseft_half_and_best_alpha():
    rows = [{"model": "zeroshot", "alpha": None, "photo/top1": 0.1, "avg_shifts/top1": 0.5},
            {"model": "finetuned", "alpha": None, "photo/top1": 0.9, "avg_shifts/top1": 0.2},
            {"model": "wiseft", "alpha": 0.0, "photo/top1": 0.1, "avg_shifts/top1": 0.5},
            {"model": "wiseft", "alpha": 0.5, "photo/top1": 0.7, "avg_shifts/top1": 0.6},
            {"model": "wiseft", "alpha": 1.0, "photo/top1": 0.9, "avg_shifts/top1": 0.2}]
    assert scores(rows, "photo") == {"finetuned/ref": 0.9, "finetuned/avg_shifts": 0.2, "wiseft_0.5/ref": 0.7,
                                     "wiseft_0.5/avg_shifts": 0.6, "wiseft_best/ref": 0.7,
                                     "wiseft_best/avg_shifts": 0.6, "wiseft_best/alpha": 0.5}


def test_best_job_ranks_completed_jobs_by_holdout():
    rows = [{"job": 0, "status": "failed", "holdout/top1": None, "finetuned/ref": None},
            {"job": 1, "status": "completed", "holdout/top1": 0.4, "finetuned/ref": 0.9},
            {"job": 2, "status": "completed", "holdout/top1": 0.6, "finetuned/ref": 0.1}]
    assert best_job(rows)["job"] == 2
    assert best_job(rows[:1]) is None


def test_eta_is_the_pace_of_this_invocation():
    # 4 of 12 done, 2 of them in this invocation's 100 s: 8 left at 50 s each
    assert eta_seconds(12, 4, 2, 100.0) == pytest.approx(400.0)
    assert eta_seconds(12, 4, 0, 100.0) is None
    records = [{"status": "completed", "finished": 150.0}, {"status": "failed", "finished": 170.0},
               {"status": "running", "finished": None}, {"status": "completed", "finished": 50.0}]
    assert progress_line(4, 6, records, started=100.0, now=200.0) == "job 5/6: 3 done (1 failed), ETA 2m30s"
    assert progress_line(0, None, [], started=0.0, now=1.0) == "job 1/?: 0 done"


def test_a_resumed_job_that_failed_before_is_not_counted_done_when_it_starts_again(tmp_path, caplog):
    for num, err in enumerate([RuntimeError("diverged"), None, None]):
        finish_job(tmp_path / str(num), start_job(tmp_path / str(num)), err)
    write_json(tmp_path / SWEEP_FILE, {"planned": 3, "started": 0.0})
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}, "job": {"num": 0},
                                         "runtime": {"output_dir": str(tmp_path / "0")}}})
    with caplog.at_level("INFO", logger="wiseft_lab.sweeps.callback"):
        SweepCallback(wandb=False).on_job_start(config)
    assert caplog.messages[-1].startswith("job 1/3: 2 done,")  # jobs 1 and 2; job 0 runs again, not "1 failed"


def test_planned_jobs_expand_the_grid_with_command_line_over_preset_params():
    config = OmegaConf.create({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                    "params": {"seed": "range(3)", "optimizer.weight_decay": "0.1,0.3"}},
        "overrides": {"task": ["optimizer.lr=1e-4,3e-4,1e-3", "seed=0,1", "smoke=tiny"]}}})
    assert planned_jobs(config) == 3 * 2 * 2
    config.hydra.sweeper = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
                            "n_trials": 7}
    assert planned_jobs(config) == 7


def test_failure_reason_is_one_line():
    assert failure_reason(ValueError("bad value\nsecond line")) == "ValueError: bad value"
    assert failure_reason(SystemExit(2)) == "SystemExit(2)"
    assert float(JobOutcome("completed", objective=0.25)) == 0.25 and math.isnan(float(JobOutcome("completed")))
    with pytest.raises(ValueError, match="the job failed: boom"):
        float(JobOutcome("failed", reason="boom"))


def test_sweep_rows_and_markdown_from_job_dirs(tmp_path):
    for num, lr, fails in ((0, "1e+30", True), (1, "0.001", False)):
        job = tmp_path / str(num)
        job.mkdir()
        record = {**start_job(job), "job": num, "overrides": ["smoke=tiny", f"optimizer.lr={lr}"]}
        finish_job(job, record, ValueError("Loss became nan") if fails else None)
        (job / "config.yaml").write_text("eval:\n  reference: photo\n")
        if not fails:
            write_jsonl(job / "results.jsonl", [{"model": "finetuned", "alpha": None, "photo/top1": 0.8,
                                                 "avg_shifts/top1": 0.3}])
            save_checkpoint(job / "checkpoints" / "finetuned", {"w": torch.zeros(1)},
                            CheckpointMeta("tiny", ["a"], ["{}"], metrics={"holdout/top1": 0.75}))
    (tmp_path / ".submitit").mkdir()
    write_json(tmp_path / ".submitit" / JOB_FILE, {"status": "running"})  # not a job of the sweep
    rows = sweep_rows(tmp_path)
    assert [(r["job"], r["overrides"], r["status"]) for r in rows] == [
        (0, "optimizer.lr=1e+30", "failed"), (1, "optimizer.lr=0.001", "completed")]
    assert rows[1]["holdout/top1"] == 0.75 and rows[1]["finetuned/ref"] == 0.8 and rows[1]["wiseft_0.5/ref"] is None
    text = sweep_markdown(rows, "demo", planned=3)
    assert "2 jobs of 3 planned: 1 completed, 1 failed" in text
    assert "| job 1 | optimizer.lr=0.001 | completed |" in text and "| 75.0 | 80.0 | 30.0 | - |" in text
    assert "**Best job**: job 1 (optimizer.lr=0.001), by held-out top-1 75.0" in text
    assert "- job 0 (optimizer.lr=1e+30): ValueError: Loss became nan" in text
