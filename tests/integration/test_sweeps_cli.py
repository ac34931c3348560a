"""Multiruns that survive and speak: a 3-job sweep whose first job diverges (optimizer.lr=1e30) finishes the
other two with the basic, the joblib (DataLoader workers included) and the submitit launcher, records the failure,
summarises the sweep, exits non-zero listing the failed job last; ``resume=true`` then skips the finished jobs,
continues the interrupted one and runs the one never started."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.wandb_records import exit_code, history_rows, run_info

pytestmark = pytest.mark.slow

LRS = "optimizer.lr=1e30,1e-3,2e-3"
SMALL = ("smoke=tiny", "merge.alphas=[0,0.5,1]", "data.holdout_fraction=0.2")


def _wandb_files(job: Path) -> list[Path]:
    return sorted(job.glob("wandb/offline-run-*/run-*.wandb"))


def _status(job: Path) -> str:
    return json.loads((job / "job.json").read_text())["status"]


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    base = tmp_path_factory.mktemp("basic_sweep")
    sweep = base / "sweep"
    proc = run_cli(*SMALL, LRS, f"hydra.sweep.dir={sweep}", cwd=base, multirun=True, check=False,
                   env={"OMP_NUM_THREADS": "1"})
    return base, sweep, proc


def test_a_diverging_job_does_not_stop_the_basic_launcher(basic_sweep):
    _, sweep, proc = basic_sweep
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert [_status(sweep / j) for j in "012"] == ["failed", "completed", "completed"]
    assert "NonFiniteLossError" in (sweep / "0" / "error.log").read_text()
    for job in "12":
        assert (sweep / job / "results.jsonl").is_file() and not (sweep / job / "error.log").exists()
    assert exit_code(_wandb_files(sweep / "0")[0]) == 1 and exit_code(_wandb_files(sweep / "1")[0]) == 0
    assert "job 1/3: 0 done" in out and "job 3/3: 2 done (1 failed), ETA" in out
    last = proc.stdout.strip().splitlines()[-2:]
    assert last[0] == "1 of 3 jobs did not finish:"
    assert last[1].startswith("  job 0 (optimizer.lr=1e+30): NonFiniteLossError: Loss became nan")


def test_the_sweep_summary_names_every_job_and_the_best(basic_sweep):
    _, sweep, _ = basic_sweep
    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert [(r["job"], r["overrides"], r["status"]) for r in rows] == [
        ("0", "optimizer.lr=1e+30", "failed"), ("1", "optimizer.lr=0.001", "completed"),
        ("2", "optimizer.lr=0.002", "completed")]
    for row in rows[1:]:
        assert 0 <= float(row["holdout/top1"]) <= 1 and row["wiseft_0.5/avg_shifts"] and row["wiseft_best/alpha"]
    best = max(rows[1:], key=lambda r: float(r["holdout/top1"]))
    text = (sweep / "sweep.md").read_text()
    assert f"**Best job**: job {best['job']} ({best['overrides']}), by held-out top-1" in text
    assert "job 0 (optimizer.lr=1e+30): NonFiniteLossError" in text
    sweep_runs = list(sweep.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(sweep_runs) == 1  # the table as a W&B run of the sweep's group
    info, logged = run_info(sweep_runs[0]), history_rows(sweep_runs[0])
    assert info["job_type"] == "sweep" and info["group"] == run_info(_wandb_files(sweep / "1")[0])["group"]
    assert [r["sweep/nrows"] for r in logged if "sweep/nrows" in r] == [3]


def test_resume_skips_finished_jobs_and_resumes_interrupted_ones(basic_sweep):
    base, sweep, _ = basic_sweep
    interrupted = sweep / "2"  # as if killed after its epoch checkpoint: job.json still says running
    record = json.loads((interrupted / "job.json").read_text())
    (interrupted / "job.json").write_text(json.dumps({**record, "status": "running", "finished": None}))
    for name in ("results.jsonl", "checkpoints/finetuned/meta.json"):
        (interrupted / name).unlink()
    finished = sweep / "1"
    before = {p: p.stat().st_mtime_ns for p in (finished / "results.jsonl", finished / "job.json")}
    runs_before = len(_wandb_files(finished))
    never_started = sweep / "0"  # as if the first invocation was stopped before it reached job 0
    shutil.rmtree(never_started)
    resumed_at = time.time()
    proc = run_cli(*SMALL, LRS, f"hydra.sweep.dir={sweep}", "resume=true", cwd=base, multirun=True, check=False,
                   env={"OMP_NUM_THREADS": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1  # job 0 diverges again
    assert f"{finished} (finished before: skipped)" in out
    assert {p: p.stat().st_mtime_ns for p in before} == before and len(_wandb_files(finished)) == runs_before
    assert "Resumed from" in (interrupted / "wiseft_lab.log").read_text()
    resumed = _wandb_files(interrupted)  # the interrupted job's W&B run continued by id
    assert len(resumed) == 2 and len({p.parent.name.rsplit("-", 1)[-1] for p in resumed}) == 1
    assert _status(interrupted) == "completed" and (interrupted / "results.jsonl").is_file()
    assert [r["status"] for r in csv.DictReader((sweep / "sweep.csv").open())] == ["failed", "completed", "completed"]
    assert json.loads((never_started / "job.json").read_text())["started"] >= resumed_at  # it ran, and failed again
    assert "NonFiniteLossError" in (never_started / "error.log").read_text()


def test_a_diverging_job_does_not_stop_joblib_and_workers_start_in_loky(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("smoke=tiny", "stages=[finetune]", "data.holdout_fraction=0.2", "data.num_workers=1",
                   "eval.num_workers=1", "hydra/launcher=joblib", "logger=none", LRS, f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path, multirun=True, check=False, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    assert [_status(sweep / j) for j in "012"] == ["failed", "completed", "completed"]
    assert "no attribute 'env'" not in proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("  job 0 (optimizer.lr=1e+30): NonFiniteLossError")


def test_a_diverging_job_does_not_stop_submitit(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("smoke=tiny", "stages=[finetune]", "data.holdout_fraction=0.2", "hydra/launcher=submitit_local",
                   LRS, f"hydra.sweep.dir={sweep}", cwd=tmp_path, multirun=True, check=False,
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    assert [_status(sweep / j) for j in "012"] == ["failed", "completed", "completed"]
    assert exit_code(_wandb_files(sweep / "0")[0]) == 1 and exit_code(_wandb_files(sweep / "2")[0]) == 0
    assert "NonFiniteLossError" in (sweep / "0" / "error.log").read_text()
    last = proc.stdout.strip().splitlines()[-2:]
    assert last[0] == "1 of 3 jobs did not finish:"
    assert last[1].startswith("  job 0 (optimizer.lr=1e+30): NonFiniteLossError: Loss became nan")
