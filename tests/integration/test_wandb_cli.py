"""W&B as its users expect, read back from the offline run files: job type, name, tags, group, checkpoints as
artifacts, step metrics, the resolved precision and the versions in the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.wandb_records import artifacts, history_rows, run_info, step_metrics

pytestmark = pytest.mark.slow


def wandb_file(run_dir: Path) -> Path:
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return path


def test_a_sweeps_runs_are_named_tagged_and_grouped_by_what_varies(tmp_path):
    run_cli("smoke=tiny", "stages=[finetune]", "seed=0,1", "logger.log_checkpoints=true", cwd=tmp_path,
            multirun=True)
    (sweep,) = tmp_path.glob("outputs/multirun/demo/*")
    infos = [run_info(wandb_file(sweep / job)) for job in ("0", "1")]
    assert [i["name"] for i in infos] == ["demo finetune seed=0", "demo finetune seed=1"]
    assert {i["job_type"] for i in infos} == {"finetune"}
    assert {i["group"] for i in infos} == {f"demo: seed ({sweep.name})"}
    assert "seed=1" in infos[1]["tags"] and "finetune=e2e" in infos[1]["tags"]
    config = infos[0]["config"]
    assert config["resolved_precision"] in ("bf16", "fp32") and config["versions"]["torch"]
    assert config["resolved_threads"] >= 1  # the thread count the job ran with, beside the config's threads: null
    models = [a for a in artifacts(wandb_file(sweep / "0")) if a["type"] == "model"]
    assert sorted(a["name"] for a in models) == [f"finetuned-{infos[0]['id']}", f"zeroshot-{infos[0]['id']}"]
    assert {row["train/epoch"] for row in history_rows(wandb_file(sweep / "0")) if "train/epoch" in row} == {1}
    metrics = step_metrics(wandb_file(sweep / "0"))
    assert metrics["greedy/*"] == "greedy/step" and metrics["wiseft/*"] == "wiseft/alpha"


def test_an_evaluation_alone_is_an_evaluate_job_named_by_its_time(tmp_path):
    run_cli("smoke=tiny", "stages=[evaluate]", cwd=tmp_path)
    (run_dir,) = tmp_path.glob("outputs/demo/runs/*")
    info = run_info(wandb_file(run_dir))
    assert info["job_type"] == "evaluate" and info["name"] == f"demo evaluate {run_dir.name}" and info["group"] == ""
    assert not [a for a in artifacts(wandb_file(run_dir)) if a["type"] == "model"]  # log_checkpoints: off by default
