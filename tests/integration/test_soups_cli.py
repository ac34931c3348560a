"""The sweep-then-soup workflow end to end: a joblib multirun (2 jobs at once) fine-tunes 4 ingredients of the
tiny model, one of which fails; then one run builds every soup from the sweep directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.conftest import run_cli
from tests.wandb_records import history_rows, records, run_info
from wiseft_lab.models.checkpoint import load_state_dict
from wiseft_lab.reporting.wandb_names import group_name
from wiseft_lab.weight_space.landscape import Plane, pairwise_angles
from wiseft_lab.weight_space.model_stock import model_stock
from wiseft_lab.weight_space.soups import greedy_order

pytestmark = pytest.mark.slow

RECIPES = "merge.recipes=[uniform,greedy,learned,learned_per_layer,fisher]"


def _wandb_file(run_dir: Path) -> Path:
    files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    base = tmp_path_factory.mktemp("soup_sweep")
    proc = run_cli("experiment=soups", "smoke=tiny", "stages=[finetune]", "hydra/launcher=joblib",
                   "optimizer.lr=1e-3,2e-3,3e-3,-1", "optimizer.weight_decay=0.1", "seed=0", cwd=base, multirun=True,
                   check=False,
                   env={"OMP_NUM_THREADS": "1"})
    sweeps = list(base.glob("outputs/multirun/soups/*"))
    assert len(sweeps) == 1, (sweeps, proc.stderr[-3000:])
    return sweeps[0], proc


@pytest.fixture(scope="module")
def soup_run(sweep, tmp_path_factory) -> tuple[Path, str]:
    sweep_dir, _ = sweep
    base = tmp_path_factory.mktemp("soup_run")
    proc = run_cli("experiment=soups", "smoke=tiny", "stages=[merge,evaluate]", f"merge.pool={sweep_dir}", RECIPES,
                   "merge.wiseft_alphas=[0,0.5,1]", "merge.angles=true", cwd=base, env={"OMP_NUM_THREADS": "1"})
    runs = list(base.glob("outputs/soups/runs/*"))
    assert len(runs) == 1
    return runs[0], proc.stdout + proc.stderr


def test_sweep_runs_two_jobs_at_once_and_logs_the_failed_one(sweep):
    sweep_dir, proc = sweep
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0  # Hydra reports the failed job once every job has run
    assert "n_jobs=2" in log and "launching 4 jobs" in log
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    assert "optimizer.lr=-1: must be a number > 0" in (jobs[3] / "error.log").read_text()  # checked before compute
    assert not (jobs[3] / "checkpoints" / "finetuned").exists()
    for job in jobs[:3]:
        meta = json.loads((job / "checkpoints" / "finetuned" / "meta.json").read_text())
        assert 0.0 <= meta["metrics"]["holdout/top1"] <= 1.0 and not (job / "error.log").exists()
    groups = {run_info(_wandb_file(job))["group"] for job in jobs[:3]}
    assert groups == {group_name(sweep_dir)} and sweep_dir.name in group_name(sweep_dir)


def test_soups_from_the_sweep_directory(sweep, soup_run):
    sweep_dir, _ = sweep
    run_dir, log = soup_run
    assert "skipping" in log and "optimizer.lr=-1: must be a number > 0" in log  # the failed job, with its error

    pool = json.loads((run_dir / "soups" / "pool.json").read_text())
    assert [i["name"] for i in pool["ingredients"]] == ["0", "1", "2"]
    assert [Path(s["source"]).name for s in pool["skipped"]] == ["3"]
    held = [i["holdout/top1"] for i in pool["ingredients"]]
    best = pool["ingredients"][greedy_order(held)[0]]["name"]

    rows = _rows(run_dir)
    models = [r["model"] for r in rows]
    for model in ("uniform_soup", "greedy_soup", "learned_soup", "learned_soup_per_layer", "fisher_soup",
                  "ensemble", "zeroshot"):
        assert models.count(model) == 1, model
    assert models.count("ingredient") == 3 and models.count("wiseft") == 3
    by_model = {r["model"]: r for r in rows}
    assert by_model["ensemble"]["n_ingredients"] == 3 and by_model["uniform_soup"]["n_ingredients"] == 3
    best_row = next(r for r in rows if r.get("best_individual"))
    assert best_row["ingredient"] == best and best_row["holdout/top1"] == max(held)
    assert by_model["greedy_soup"]["holdout/top1"] >= max(held)  # never below the best ingredient
    for row in rows:
        assert "photo/top1" in row and "avg_shifts/top1" in row

    trace = [json.loads(x) for x in (run_dir / "soups" / "greedy_trace.jsonl").read_text().splitlines()]
    greedy = json.loads((run_dir / "soups" / "greedy_soup.json").read_text())
    assert trace[0]["candidate"] == best and trace[0]["accepted"] and len(trace) == 3
    assert greedy["ingredients"] == [s["candidate"] for s in trace if s["accepted"]]
    assert greedy["order"] == [pool["ingredients"][i]["name"] for i in greedy_order(held)]
    assert by_model["greedy_soup"]["n_ingredients"] == len(greedy["ingredients"])

    learned = json.loads((run_dir / "soups" / "learned_soup.json").read_text())
    assert len(learned["coefficients"]) == 1 and sum(learned["coefficients"][0]) == pytest.approx(1.0)
    per_layer = json.loads((run_dir / "soups" / "learned_soup_per_layer.json").read_text())
    assert len(per_layer["rows"]) > 1 and all(sum(r) == pytest.approx(1.0) for r in per_layer["coefficients"])

    for soup in ("uniform_soup", "greedy_soup", "learned_soup", "learned_soup_per_layer", "fisher_soup"):
        meta = json.loads((run_dir / "checkpoints" / soup / "meta.json").read_text())
        assert meta["method"] == soup and meta["arch"] == "wiseft-tiny-vit"
        with safe_open(run_dir / "checkpoints" / soup / "model.safetensors", "pt") as handle:
            assert "head.weight" in handle.keys()
    assert json.loads((run_dir / "checkpoints/greedy_soup/meta.json").read_text())["soup"]["ingredients"] == \
        greedy["ingredients"]

    table = (run_dir / "soups.md").read_text()
    for label in ("Best individual model", "Uniform soup", "Greedy soup", "Learned soup", "Learned soup (per layer)",
                  "Fisher merging", "Ensemble (mean logits)", "photo (ref)", "Avg shifts", "## Skipped"):
        assert label in table, label
    csv_methods = [line.split(",")[0] for line in (run_dir / "soups.csv").read_text().splitlines()[1:]]
    assert csv_methods[:2] == ["zeroshot", "best_individual"] and csv_methods.count("ingredient") == 3
    assert (run_dir / "soups.png").stat().st_size > 10_000


def test_soup_run_is_logged_with_its_sweeps_group(sweep, soup_run):
    sweep_dir, _ = sweep
    run_dir, _ = soup_run
    wandb_file = _wandb_file(run_dir)
    info = run_info(wandb_file)
    assert info["group"] == group_name(sweep_dir) and info["job_type"] == "soup"
    keys = set().union(*history_rows(wandb_file))
    assert {"soups_table/_type", "soups_pool_table/_type", "soups_png/_type", "greedy/holdout_top1",
            "learned_soup/loss", "ingredients/_type"} <= keys
    summary = _summary(wandb_file)
    assert summary["soups/ingredients"] == ["0", "1", "2"] and summary["soups/pool"] == str(sweep_dir)
    assert summary["soups/source_group"] == group_name(sweep_dir) and len(summary["soups/source_runs"]) == 3
    assert all(summary["soups/source_runs"]) and summary["greedy_soup/ingredients"]
    assert not [key for key in summary if key.startswith("ingredient/")]  # the ingredients are a table
    assert f"{sweep_dir / '3'}: the job failed" in summary["soups/skipped"][0]


def _summary(path: Path) -> dict:
    out = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def test_model_stock_of_the_sweep(sweep, tmp_path):
    sweep_dir, _ = sweep
    run_cli("smoke=tiny", "task_name=model_stock", "stages=[merge,evaluate]", "logger=none", "merge=model_stock",
            f"merge.pool={sweep_dir}", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    run_dir = next(tmp_path.glob("outputs/model_stock/runs/*"))
    models = [r["model"] for r in _rows(run_dir)]
    assert models == ["zeroshot", "model_stock", "ingredient", "ingredient", "ingredient"]
    record = json.loads((run_dir / "model_stock" / "model_stock.json").read_text())
    assert record["k"] == 3 and record["ingredients"] == ["0", "1", "2"]
    assert record["pretrained"] == str(sweep_dir / "0" / "checkpoints" / "zeroshot")
    expected = model_stock(sweep_dir / "0/checkpoints/zeroshot", [sweep_dir / f"{j}/checkpoints/finetuned"
                                                                   for j in range(3)])
    merged = load_state_dict(run_dir / "checkpoints" / "model_stock")
    for key, tensor in expected.state.items():
        torch.testing.assert_close(merged[key], tensor, rtol=0, atol=0)
    assert "## Other models" in (run_dir / "summary.md").read_text()


def test_error_landscape_through_two_jobs_of_the_sweep(sweep, tmp_path):
    sweep_dir, _ = sweep
    run_cli("smoke=tiny", "task_name=landscape", "stages=[merge,evaluate]", "logger=none", "merge=landscape",
            f"merge.pool=[{sweep_dir / '1'},{sweep_dir / '2'}]", "merge.resolution=3", "merge.train_examples=8",
            cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    out = next(tmp_path.glob("outputs/landscape/runs/*")) / "landscape"
    plane = json.loads((out / "plane.json").read_text())
    expected = Plane.through(sweep_dir / "1/checkpoints/zeroshot", sweep_dir / "1/checkpoints/finetuned",
                             sweep_dir / "2/checkpoints/finetuned")
    assert [v for c in plane["coordinates"] for v in c] == pytest.approx([v for c in expected.coordinates for v in c])
    xs, ys = expected.grid(3, 0.2)
    grid = [line.split(",") for line in (out / "grid.csv").read_text().splitlines()]
    header, body = grid[0], [dict(zip(grid[0], row, strict=True)) for row in grid[1:]]
    assert header[:6] == ["i", "j", "x", "y", "train/loss", "train/error"] and "avg_shifts/error" in header
    points = [v for r in body for v in (float(r["x"]), float(r["y"]))]
    assert points == pytest.approx([v for y in ys for x in xs for v in (x, y)])  # row by row, x fastest
    assert all(0 <= float(r["photo/error"]) <= 1 and float(r["train/loss"]) > 0 for r in body)
    for name in ("train_loss", "photo_error", "avg_shifts_error"):
        assert (out / f"{name}.png").stat().st_size > 5_000 and (out / f"{name}.pdf").is_file()


def test_angles_between_the_ingredients_and_their_pair_averages(sweep, soup_run):
    sweep_dir, _ = sweep
    run_dir, _ = soup_run
    rows = _rows(run_dir)
    pairs = [r for r in rows if r["model"] == "pair_average"]
    assert [r["pair"] for r in pairs] == [["0", "1"], ["0", "2"], ["1", "2"]]
    degrees = pairwise_angles(sweep_dir / "0/checkpoints/zeroshot",
                              [sweep_dir / f"{j}/checkpoints/finetuned" for j in range(3)])
    assert [r["angle"] for r in pairs] == pytest.approx([degrees[0][1], degrees[0][2], degrees[1][2]])
    ingredients = {r["ingredient"]: r for r in rows if r["model"] == "ingredient"}
    gains = (run_dir / "soups_angles.csv").read_text().splitlines()
    first = dict(zip(gains[0].split(","), gains[1].split(","), strict=True))
    expected = pairs[0]["photo/top1"] - (ingredients["0"]["photo/top1"] + ingredients["1"]["photo/top1"]) / 2
    assert float(first["gain/photo/top1"]) == pytest.approx(expected)
    assert "## Angles between fine-tuning deltas" in (run_dir / "soups.md").read_text()
    assert (run_dir / "soups_angles.png").stat().st_size > 5_000


def test_a_learned_soup_of_linear_classifiers_runs_their_shared_tower_once(tmp_path):
    """lc ingredients share the zero-shot image tower: the learned soup trains on its held-out outputs, and the soup's
    tower is that tower itself."""
    run_cli("experiment=soups", "smoke=tiny", "stages=[finetune]", "finetune=lc", "optimizer.lr=1e-2,3e-2",
            "optimizer.weight_decay=0.1", "seed=0", cwd=tmp_path, multirun=True, env={"OMP_NUM_THREADS": "1"})
    sweep_dir = next(tmp_path.glob("outputs/multirun/soups/*"))
    proc = run_cli("experiment=soups", "smoke=tiny", "stages=[merge,evaluate]", f"merge.pool={sweep_dir}",
                   "merge.recipes=[learned]", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert "the ingredients share their image tower" in proc.stdout + proc.stderr
    run = next(tmp_path.glob("outputs/soups/runs/*"))
    soup = load_state_dict(run / "checkpoints" / "learned_soup")
    ingredients = [load_state_dict(sweep_dir / job / "checkpoints" / "finetuned") for job in ("0", "1")]
    assert all(torch.equal(soup[k], ingredients[0][k]) for k in soup if not k.startswith("head."))
    assert not any(torch.equal(soup["head.weight"], i["head.weight"]) for i in ingredients)
    coefficients = json.loads((run / "soups" / "learned_soup.json").read_text())["coefficients"][0]
    assert sum(coefficients) == pytest.approx(1.0) and len(coefficients) == 2
