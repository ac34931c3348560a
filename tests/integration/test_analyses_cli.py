"""The analyses at smoke size through the CLI: Fisher-weighted WiSE-FT, calibration columns, alpha selection,
cross-dataset soups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import only_run_dir, run_cli
from wiseft_lab.evaluation.calibration import expected_calibration_error, negative_log_likelihood
from wiseft_lab.models.checkpoint import load_state_dict, read_meta, save_checkpoint
from wiseft_lab.weight_space.interpolate import interpolate
from wiseft_lab.weight_space.soups import greedy_order

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fisher_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("fisher")
    run_cli("smoke=tiny", "logger=none", "precision=fp32", "merge.alphas=[0,0.5,1]", "merge.save_alphas=[0,0.5,1]",
            "merge.fisher=true", "data.holdout_fraction=0.2", "eval.save_predictions=true", "eval.calibration_bins=5",
            "merge.select_alpha=[best_holdout,alpha_0.5]", cwd=base)
    return only_run_dir(base)


def test_fisher_weighted_wiseft_keeps_the_endpoints_and_mixes_per_element(fisher_run):
    ckpt = fisher_run / "checkpoints"
    zeroshot, finetuned = load_state_dict(ckpt / "zeroshot"), load_state_dict(ckpt / "finetuned")
    for alpha, endpoint in ((0, zeroshot), (1, finetuned)):
        merged = load_state_dict(ckpt / f"wiseft_alpha{alpha}")
        assert all(torch.equal(merged[k], endpoint[k]) for k in endpoint), alpha
    half, plain = load_state_dict(ckpt / "wiseft_alpha0.5"), interpolate(zeroshot, finetuned, 0.5)
    changed = [k for k in half if half[k].is_floating_point() and not torch.equal(zeroshot[k], finetuned[k])]
    assert changed and any(not torch.allclose(half[k], plain[k]) for k in changed)  # not the plain average
    for key in changed:  # per element a convex combination of the endpoints
        low, high = torch.minimum(zeroshot[key], finetuned[key]), torch.maximum(zeroshot[key], finetuned[key])
        slack = 1e-6 * (1 + high.abs())
        assert bool(((half[key] >= low - slack) & (half[key] <= high + slack)).all()), key
    rows = [json.loads(x) for x in (fisher_run / "results.jsonl").read_text().splitlines()]
    sweep = [r for r in rows if r["model"] == "wiseft"]
    chosen = {r["rule"]: r for r in rows if r["model"] == "alpha_selection"}
    assert list(chosen) == ["oracle", "best_holdout", "alpha_0.5"] and chosen["alpha_0.5"]["alpha"] == 0.5
    best = max(sweep, key=lambda r: (r["holdout/top1"], -r["alpha"]))
    assert chosen["best_holdout"]["alpha"] == best["alpha"]
    assert "## Choosing alpha without the shifts" in (fisher_run / "summary.md").read_text()
    assert [r["alpha"] for r in sweep] == [0, 0.5, 1] and all(r["fisher"] for r in sweep)
    assert sweep[0]["photo/top1"] == rows[0]["photo/top1"] and sweep[2]["photo/top1"] == rows[1]["photo/top1"]


def test_every_row_has_calibration_columns_with_a_held_out_temperature(fisher_run):
    rows = [json.loads(x) for x in (fisher_run / "results.jsonl").read_text().splitlines()]
    sets = ["photo", "sketch", "cartoon", "painting", "clutter", "holdout"]
    for row in rows:
        assert row["temperature"] > 0 and row["n/holdout"] == 10  # at least one image of each of the 10 classes
        for name in sets:
            assert {f"{name}/{m}{s}" for m in ("ece", "nll", "brier") for s in ("", "_ts")} <= set(row), name
    zeroshot = rows[0]
    saved = load_file(fisher_run / "predictions" / "zeroshot" / "photo.safetensors")
    logits, labels = saved["logits"], saved["labels"]
    assert zeroshot["photo/ece"] == pytest.approx(expected_calibration_error(logits, labels, n_bins=5))
    assert zeroshot["photo/nll_ts"] == pytest.approx(negative_log_likelihood(logits / zeroshot["temperature"], labels))
    assert (fisher_run / "ece_alpha.png").stat().st_size > 10_000


# The demo CLIP (not the random tiny model, whose held-out accuracies are all alike): choosing ingredients on the
# target's held-out split then means something.
DEMO = ("smoke=tiny", "model=demo_clip", "logger=none")


@pytest.fixture(scope="module")
def cross_pool(tmp_path_factory) -> list[Path]:
    """Two ingredients, each with a head over 5 of the 10 classes (the base and the novel ones), and a third with
    the base one's image tower drowned in noise: a known bad ingredient."""
    base = tmp_path_factory.mktemp("cross_pool")
    for subset in ("base", "novel"):
        run_cli(*DEMO, "stages=[finetune]", f"+data.classes={subset}", f"task_name={subset}", cwd=base)
    pool = [next(base.glob(f"outputs/{s}/runs/*")) / "checkpoints/finetuned" for s in ("base", "novel")]
    state, generator = load_state_dict(pool[0]), torch.Generator().manual_seed(0)
    for key, value in state.items():
        if key.startswith("clip.visual.") and value.is_floating_point() and value.ndim >= 2:
            value.add_(20 * value.std() * torch.randn(value.shape, generator=generator))
    bad = save_checkpoint(base / "bad" / "checkpoints" / "finetuned", state, read_meta(pool[0]))
    return [*pool, bad]


def _rows(run_dir: Path) -> dict[tuple[str, str | None], dict]:
    return {(r["model"], r.get("ingredient")): r
            for r in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())}


def test_a_cross_dataset_soup_of_ingredients_with_other_classes(cross_pool, tmp_path):
    pool = cross_pool[:2]
    run_cli("experiment=soups_cross_dataset", *DEMO, f"merge.pool=[{pool[0]},{pool[1]}]", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    rows = _rows(run_dir)
    assert set(rows) == {("zeroshot", None), ("cross_dataset_soup", None), ("ingredient", pool[0].parent.parent.name),
                         ("ingredient", pool[1].parent.parent.name)} and all("photo/top1" in r for r in rows.values())
    ckpt = run_dir / "checkpoints"
    zeroshot, soup = load_state_dict(ckpt / "zeroshot_target"), load_state_dict(ckpt / "cross_dataset_soup")
    ingredients = [load_state_dict(p) for p in pool]
    assert zeroshot["head.weight"].shape[0] == 10 and ingredients[0]["head.weight"].shape[0] == 5
    assert torch.equal(soup["head.weight"], zeroshot["head.weight"])  # the target's head, never averaged
    key = "clip.visual.conv1.weight"
    torch.testing.assert_close(soup[key], (zeroshot[key] + ingredients[0][key] + ingredients[1][key]) / 3)
    assert json.loads((run_dir / "cross_dataset_soup" / "soup.json").read_text())["include_zeroshot"] is True


def test_greedy_and_learned_cross_dataset_soups_choose_on_the_targets_held_out_split(cross_pool, tmp_path):
    run_cli("experiment=soups_cross_dataset", *DEMO, f"merge.pool=[{','.join(map(str, cross_pool))}]",
            "merge.recipes=[uniform,greedy,learned]", "data.n_per_class=10", "data.holdout_fraction=0.5",
            "merge.learned.epochs=2", "merge.learned.batch_size=16", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    rows, names = _rows(run_dir), [p.parent.parent.name for p in cross_pool]
    assert {m for m, _ in rows} == {"zeroshot", "cross_dataset_soup", "cross_dataset_greedy_soup",
                                    "cross_dataset_learned_soup", "ingredient"}
    record = json.loads((run_dir / "cross_dataset_soup" / "soup.json").read_text())
    # each ingredient's held-out accuracy as a model of the target (its towers, the target's head), from the
    # transplanted files, is what the evaluate stage measures on its own row
    held = record["holdout/top1"]
    assert list(held) == ["zeroshot", *names] and held["zeroshot"] == rows["zeroshot", None]["holdout/top1"]
    assert [held[n] for n in names] == [rows["ingredient", n]["holdout/top1"] for n in names]
    assert held["bad"] < 0.5 * held["zeroshot"]
    greedy = record["soups"]["cross_dataset_greedy_soup"]
    assert greedy["order"] == ["zeroshot", *(names[i] for i in greedy_order([held[n] for n in names]))]
    best = held["zeroshot"]
    for step in greedy["trace"][1:]:  # ge: an ingredient is kept unless the soup's held-out accuracy drops
        assert step["best_before"] == best and step["accepted"] == (step["holdout"] >= best)
        best = step["holdout"] if step["accepted"] else best
    kept = [s["candidate"] for s in greedy["trace"] if s["accepted"]]
    assert greedy["ingredients"] == kept and kept[0] == "zeroshot" and "bad" not in kept
    greedy_row, uniform_row = rows["cross_dataset_greedy_soup", None], rows["cross_dataset_soup", None]
    assert greedy_row["holdout/top1"] == pytest.approx(greedy["holdout/top1"])
    assert greedy_row["holdout/top1"] > uniform_row["holdout/top1"]  # the uniform soup holds the bad ingredient
    ckpt = run_dir / "checkpoints"
    zeroshot = load_state_dict(ckpt / "zeroshot_target")
    models = {"zeroshot": zeroshot, **{n: load_state_dict(p) for n, p in zip(names, cross_pool, strict=True)}}
    key = "clip.visual.conv1.weight"
    soup = load_state_dict(ckpt / "cross_dataset_greedy_soup")
    torch.testing.assert_close(soup[key], sum(models[n][key] for n in kept) / len(kept))
    learned = record["soups"]["cross_dataset_learned_soup"]
    weights = learned["coefficients"]
    assert list(weights) == ["zeroshot", *names] and sum(weights.values()) == pytest.approx(1.0)
    assert max(weights.values()) - min(weights.values()) > 1e-3  # trained away from the uniform start
    assert len(learned["history"]) == 2 * 4  # 2 epochs of the 50 held-out images in batches of 16
    mixed = load_state_dict(ckpt / "cross_dataset_learned_soup")
    torch.testing.assert_close(mixed[key], sum(w * models[n][key] for n, w in weights.items()))
    for state in (soup, mixed):  # the target's head, fixed
        assert torch.equal(state["head.weight"], zeroshot["head.weight"])


def test_greedy_cross_dataset_soup_without_a_held_out_split_is_refused_before_compute(cross_pool, tmp_path):
    proc = run_cli("experiment=soups_cross_dataset", *DEMO, f"merge.pool=[{cross_pool[0]},{cross_pool[1]}]",
                   "merge.recipes=[uniform,greedy]", check=False, cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    assert proc.returncode != 0 and "error.log" in proc.stdout + proc.stderr
    assert "recipes ['greedy'] choose on the target's held-out split" in (run_dir / "error.log").read_text()
    assert not (run_dir / "checkpoints").exists()  # not even the target's zero-shot model was built
