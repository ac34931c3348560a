"""End to end through the console entry point, in subprocesses, on the tiny random model (``smoke=tiny``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.conftest import only_run_dir, run_cli
from tests.wandb_records import history_rows, run_info

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("smoke")
    run_cli("smoke=tiny", "merge.alphas=[0,0.5,1]", "threads=1", cwd=base)
    return only_run_dir(base)


def wandb_file(run_dir: Path) -> Path:
    files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0]


def test_run_dir_is_complete_and_self_describing(smoke_run):
    for name in ("config.yaml", "run_info.json", "results.jsonl", "results.csv", "summary.md", "wiseft_curve.png",
                 "trainable_parameters.txt", "checkpoints/zeroshot/model.safetensors",
                 "checkpoints/finetuned/meta.json", "checkpoints/epoch_001/optimizer.safetensors"):
        assert (smoke_run / name).is_file(), name
    info = json.loads((smoke_run / "run_info.json").read_text())
    assert info["seed"] == 0 and info["versions"]["torch"] and "commit" in info["git"]
    assert info["threads"] == 1  # threads=1 capped torch's threads, and the run dir says so
    rows = [json.loads(line) for line in (smoke_run / "results.jsonl").read_text().splitlines()]
    assert [(r["model"], r["alpha"]) for r in rows] == [
        ("zeroshot", 0.0), ("finetuned", 1.0), ("wiseft", 0.0), ("wiseft", 0.5), ("wiseft", 1.0)]
    shifts = ["sketch", "cartoon", "painting", "clutter"]
    for row in rows:
        assert set(row) >= {"photo/top1", "avg_shifts/top1", "n/photo", *[f"{s}/top1" for s in shifts]}
        assert row["avg_shifts/top1"] == pytest.approx(sum(row[f"{s}/top1"] for s in shifts) / 4)
        assert row["n/photo"] == 20
    assert rows[2]["photo/top1"] == rows[0]["photo/top1"] and rows[4]["photo/top1"] == rows[1]["photo/top1"]
    summary = (smoke_run / "summary.md").read_text()
    assert "| zero-shot |" in summary and "WiSE-FT, alpha=0.5" in summary and "optimal alpha" in summary
    meta = json.loads((smoke_run / "checkpoints/finetuned/meta.json").read_text())
    assert meta["arch"] == "wiseft-tiny-vit" and len(meta["classnames"]) == 10 and meta["method"] == "e2e"
    with safe_open(smoke_run / "checkpoints/finetuned/model.safetensors", "pt") as handle:
        assert "head.weight" in handle.keys() and not any(k.startswith("clip.transformer.") for k in handle.keys())


def test_wandb_offline_run_holds_per_alpha_metrics(smoke_run):
    history = history_rows(wandb_file(smoke_run))
    alphas = sorted(row["wiseft/alpha"] for row in history if "wiseft/alpha" in row)
    assert alphas == [0, 0.5, 1]
    assert any("train/loss" in row for row in history)
    assert {row["train/epoch"] for row in history if "train/epoch" in row} == {1}  # 1-based, as the console says
    assert info_project(smoke_run) == "wiseft-lab"


def info_project(run_dir: Path) -> str:
    return run_info(wandb_file(run_dir))["project"]


def test_each_stage_runs_alone_from_saved_checkpoints(smoke_run, tmp_path):
    ckpt = smoke_run / "checkpoints"
    run_cli("smoke=tiny", "logger=none", "stages=[evaluate]", f"checkpoints.finetuned={ckpt / 'finetuned'}",
            cwd=tmp_path / "eval")
    rows = [json.loads(x) for x in (only_run_dir(tmp_path / "eval") / "results.jsonl").read_text().splitlines()]
    original = json.loads((smoke_run / "results.jsonl").read_text().splitlines()[1])
    assert [r["model"] for r in rows] == ["finetuned"] and rows[0]["photo/top1"] == original["photo/top1"]

    run_cli("smoke=tiny", "logger=none", "stages=[merge,evaluate]", "merge.alphas=[0.25]",
            f"checkpoints.zeroshot={ckpt / 'zeroshot'}", f"checkpoints.finetuned={ckpt / 'finetuned'}",
            "merge.save_alphas=[0.25]", cwd=tmp_path / "merge")
    run_dir = only_run_dir(tmp_path / "merge")
    rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["model"], r["alpha"]) for r in rows] == [("zeroshot", 0.0), ("finetuned", 1.0), ("wiseft", 0.25)]
    assert (run_dir / "checkpoints/wiseft_alpha0.25/model.safetensors").is_file()

    failed = run_cli("smoke=tiny", "logger=none", "stages=[merge]", "merge=none", cwd=tmp_path / "nothing",
                     check=False)
    assert failed.returncode != 0 and "checkpoints.finetuned=<dir>" in failed.stderr + failed.stdout


def test_multirun_jobs_are_distinct_wandb_runs_in_one_group(tmp_path):
    run_cli("smoke=tiny", "stages=[finetune]", "seed=0,1", cwd=tmp_path, multirun=True)
    jobs = sorted(p.parent for p in tmp_path.glob("outputs/multirun/demo/*/*/config.yaml"))
    assert len(jobs) == 2
    infos = [run_info(wandb_file(job)) for job in jobs]
    assert infos[0]["id"] != infos[1]["id"] and infos[0]["group"] == infos[1]["group"] != ""


def test_wandb_mode_environment_wins(tmp_path):
    run_cli("smoke=tiny", "stages=[]", "logger.mode=offline", cwd=tmp_path, env={"WANDB_MODE": "disabled"})
    run_dir = only_run_dir(tmp_path)
    assert not list(run_dir.glob("wandb/offline-run-*"))
    assert "trainable parameters" in (run_dir / "trainable_parameters.txt").read_text()


def test_print_config_and_misspelt_override(tmp_path):
    shown = run_cli("--cfg", "job", cwd=tmp_path)
    assert "task_name: demo" in shown.stdout and "_target_: torch.optim.AdamW" in shown.stdout
    bad = run_cli("optimizer.lrr=1", cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "Could not override 'optimizer.lrr'" in bad.stderr
    bad_group = run_cli("merge=soupz", cwd=tmp_path, check=False)
    assert bad_group.returncode != 0 and "Could not find 'merge/soupz'" in bad_group.stderr


def test_console_script_runs_this_package(tmp_path):
    """The installed ``wiseft-lab`` script composes this package's configs (not just any Hydra app)."""
    out = subprocess.run([Path(sys.executable).parent / "wiseft-lab", "smoke=tiny", "--cfg", "job"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "task_name: demo" in out.stdout and "arch: wiseft-tiny-vit" in out.stdout


def test_linear_classifier_trains_only_the_head_on_cached_features(tmp_path):
    run_cli("smoke=tiny", "logger=none", "finetune=lc", "merge=none", "eval.save_predictions=true",
            f"paths.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 1
    with safe_open(run_dir / "checkpoints/zeroshot/model.safetensors", "pt") as zs, \
            safe_open(run_dir / "checkpoints/finetuned/model.safetensors", "pt") as ft:
        changed = {k for k in zs.keys() if not (zs.get_tensor(k) == ft.get_tensor(k)).all()}
    assert changed == {"head.weight", "head.bias"}
    assert (run_dir / "predictions/finetuned/sketch.safetensors").is_file()


def snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file of a run with its size and modification time: equal snapshots, an unmodified run."""
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_resume_true_continues_an_interrupted_run_in_its_own_dir(tmp_path):
    run_cli("smoke=tiny", "logger=none", "stages=[finetune]", cwd=tmp_path)
    first = only_run_dir(tmp_path)
    (first / "checkpoints/finetuned/meta.json").unlink()  # as if killed after the last epoch checkpoint
    before = snapshot(first)
    proc = run_cli("smoke=tiny", "logger=none", "stages=[finetune]", "finetune.epochs=2", "resume=true",
                   "resume_allow=[finetune.epochs]", "hydra.run.dir=outputs/demo/runs/resumed", cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert "continuing the interrupted run" in log and "epoch 1 done" in log
    assert "finetune.epochs changes from 1 to 2 (allowed by resume_allow)" in log
    assert snapshot(first) == before  # the interrupted run is only read
    resumed = tmp_path / "outputs/demo/runs/resumed/checkpoints"
    assert (resumed / "epoch_002/trainer_state.json").is_file()
    assert json.loads((resumed / "finetuned/meta.json").read_text())["epoch"] == 2
    # the interrupted run is continued now: a later resume=true must not pick it up again
    again = run_cli("smoke=tiny", "logger=none", "stages=[finetune]", "resume=true",
                    "hydra.run.dir=outputs/demo/runs/later", cwd=tmp_path)
    assert "no interrupted run" in again.stdout + again.stderr


def test_a_finished_run_resumed_with_changes_is_refused_then_continued_elsewhere(tmp_path):
    run_cli("smoke=tiny", "logger=none", "stages=[finetune]", cwd=tmp_path)
    first = only_run_dir(tmp_path)
    before = snapshot(first)
    changes = (f"resume={first}", "finetune.epochs=2", "optimizer.lr=0.5")
    refused = run_cli("smoke=tiny", "logger=none", "stages=[finetune]", *changes,
                      "hydra.run.dir=outputs/demo/runs/refused", cwd=tmp_path, check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "Traceback" not in out
    assert "optimizer.lr: 0.001 -> 0.5" in out and "finetune.epochs: 1 -> 2" in out
    assert "resume_allow=[optimizer.lr,finetune.epochs]" in out
    assert not (tmp_path / "outputs/demo/runs/refused/config.yaml").exists()
    run_cli("smoke=tiny", "logger=none", "stages=[finetune]", *changes, "resume_allow=[finetune.epochs,optimizer]",
            "hydra.run.dir=outputs/demo/runs/more", cwd=tmp_path)
    assert snapshot(first) == before  # never modified: no epoch_002 there, its epoch_001 kept
    more = tmp_path / "outputs/demo/runs/more/checkpoints"
    state = json.loads((more / "epoch_002/trainer_state.json").read_text())
    assert state["epoch"] == 2 and state["metrics"]["train/lr"] > 0.001  # lr 0.5 took effect (base 0.001 cannot)
    assert json.loads((more / "resumed_from.json").read_text())["run_dir"] == str(first)


def test_a_finished_run_resumed_in_place_is_refused_untouched_and_a_stopped_one_continues(tmp_path):
    run_cli("smoke=tiny", "logger=none", "stages=[finetune]", "hydra.run.dir=outputs/demo/runs/done", cwd=tmp_path)
    done = tmp_path / "outputs/demo/runs/done"

    def ours(run_dir: Path) -> dict[str, tuple[int, int]]:  # Hydra itself rewrites .hydra/ and appends to the log
        return {k: v for k, v in snapshot(run_dir).items() if not k.startswith(".hydra/") and k != "wiseft_lab.log"}

    before = ours(done)
    refused = run_cli("smoke=tiny", "logger=none", "stages=[finetune]", "resume=true", "finetune.epochs=2",
                      "resume_allow=[finetune.epochs]", "hydra.run.dir=outputs/demo/runs/done", cwd=tmp_path,
                      check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "holds a finished run, which is never modified" in out
    assert "Traceback" not in out
    assert ours(done) == before  # no error.log, job.json still "completed", no epoch_002
    # stopped after its fine-tuning (pre-empted while evaluating): started again, the job continues in place
    record = json.loads((done / "job.json").read_text())
    (done / "job.json").write_text(json.dumps({**record, "status": "preempted"}))
    again = run_cli("smoke=tiny", "logger=none", "stages=[finetune]", "hydra.run.dir=outputs/demo/runs/done",
                    cwd=tmp_path)
    log = again.stdout + again.stderr
    assert "was pre-empted (job.json): continuing it" in log and "Resumed from" in log
    assert json.loads((done / "job.json").read_text())["status"] == "completed"


def test_checkpoints_of_two_architectures_fail_in_one_line_before_anything_is_evaluated(tmp_path):
    for name, arch in (("zs", "wiseft-tiny-vit"), ("ft", "ViT-B-32")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"never read")
        (tmp_path / name / "meta.json").write_text(json.dumps({"arch": arch, "classnames": ["a"], "templates": ["{}"]}))
    proc = run_cli("smoke=tiny", "logger=none", "stages=[merge,evaluate]", f"checkpoints.zeroshot={tmp_path / 'zs'}",
                   f"checkpoints.finetuned={tmp_path / 'ft'}", "hydra.run.dir=outputs/demo/runs/mixed", cwd=tmp_path,
                   check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out and "load_state_dict" not in out
    assert f"checkpoints.finetuned={tmp_path / 'ft'} is a ViT-B-32 checkpoint, but this run's model is " \
           "wiseft-tiny-vit" in out
    run_dir = tmp_path / "outputs/demo/runs/mixed"
    assert not any((run_dir / name).exists() for name in ("results.jsonl", "checkpoints", "summary.md"))


def test_own_image_folders_from_the_readme(tmp_path):
    """The README's "your own data" recipe: data=folder + eval=folder on a generated class-folder tree."""
    from PIL import Image

    root = tmp_path / "my_task"
    for split, count in (("train", 4), ("test", 2)):
        for colour in ("red", "blue"):
            folder = root / split / f"{colour}_thing"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 40), colour).save(folder / f"{i}.png")
    run_cli("~experiment", "model=tiny_random", "data=folder", f"data.dataset.root={root}", "data.num_workers=0",
            "eval=folder", "eval.num_workers=0", "finetune.epochs=1", "finetune.batch_size=4",
            "scheduler.warmup_steps=1", "merge.alphas=[0,1]", "logger=none", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert {r["model"] for r in rows} == {"zeroshot", "finetuned", "wiseft"}
    assert all(r["n/test"] == 4 for r in rows)
    meta = json.loads((run_dir / "checkpoints" / "zeroshot" / "meta.json").read_text())
    assert meta["classnames"] == ["blue thing", "red thing"]


def test_missing_data_fails_before_training_with_the_layout_not_a_traceback(tmp_path):
    proc = run_cli("~experiment", "model=tiny_random", "data=imagenet", "eval=imagenet_shifts",
                   f"paths.data_root={tmp_path / 'none'}", "logger=none", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "Expected layout" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr + proc.stdout
    run_dir = only_run_dir(tmp_path)
    assert "DataLayoutError" in (run_dir / "error.log").read_text()
    assert not (run_dir / "checkpoints").exists()


def test_a_terminated_run_records_why_and_keeps_its_epoch_checkpoints(tmp_path):
    """SIGTERM (a scheduler's pre-emption) during training checkpoints at the next step and writes error.log."""
    import os
    import signal
    import time

    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "wiseft_lab", "smoke=tiny", "logger=none", "stages=[finetune]",
            "data.dataset.n_per_class=100", "finetune.epochs=50"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not list(tmp_path.glob("outputs/demo/runs/*/checkpoints/epoch_001/trainer_state.json")):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    run_dir = only_run_dir(tmp_path)
    error = (run_dir / "error.log").read_text()
    assert "Preempted" in error and "resume=true continues from" in error
    saved = error.rsplit("continues from ", 1)[1].split()[0]
    assert Path(saved).name.startswith(("step_", "epoch_")) and (Path(saved) / "trainer_state.json").is_file()
    assert not (run_dir / "checkpoints" / "finetuned").exists()
