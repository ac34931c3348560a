"""The analyses at smoke size through the CLI: Fisher-weighted WiSE-FT, calibration columns, alpha selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import only_run_dir, run_cli
from wiseft_lab.evaluation.calibration import expected_calibration_error, negative_log_likelihood
from wiseft_lab.models.checkpoint import load_state_dict
from wiseft_lab.weight_space.interpolate import interpolate

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


def test_a_cross_dataset_soup_of_ingredients_with_other_classes(tmp_path):
    for subset in ("base", "novel"):  # two ingredients, each with a head over 5 of the 10 classes
        run_cli("smoke=tiny", "logger=none", "stages=[finetune]", f"+data.classes={subset}", f"task_name={subset}",
                cwd=tmp_path)
    pool = [next(tmp_path.glob(f"outputs/{s}/runs/*")) / "checkpoints/finetuned" for s in ("base", "novel")]
    run_cli("experiment=soups_cross_dataset", "smoke=tiny", "logger=none", f"merge.pool=[{pool[0]},{pool[1]}]",
            cwd=tmp_path / "soup")
    run_dir = only_run_dir(tmp_path / "soup")
    rows = {(r["model"], r.get("ingredient")): r
            for r in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())}
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
