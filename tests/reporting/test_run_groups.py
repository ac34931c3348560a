"""wiseft-lab-report without --table: runs grouped by what differs in their configs, aggregated over seeds only."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from wiseft_lab.io import atomic_write_text, write_jsonl
from wiseft_lab.report_cli import main
from wiseft_lab.reporting.paper.runs import Run
from wiseft_lab.reporting.run_groups import differing_keys, flatten, group_runs, pooled_differences, runs_table


def _run(lr: float, seed: int, photo: float, workers: int = 0) -> Run:
    config = OmegaConf.create({"seed": seed, "optimizer": {"lr": lr}, "data": {"num_workers": workers},
                               "paths": {"output_dir": f"out/{lr}/{seed}"}})
    rows = [{"model": "finetuned", "alpha": None, "photo/top1": photo, "avg_shifts/top1": photo / 2},
            {"model": "wiseft", "alpha": 0.5, "photo/top1": photo, "avg_shifts/top1": 0.1},
            {"model": "wiseft", "alpha": 1.0, "photo/top1": photo, "avg_shifts/top1": 0.3}]
    return Run(path=Path(f"out/{lr}/{seed}/results.jsonl"), rows=rows, seed=seed, config=config)


def test_differing_keys_skip_the_seed_and_bookkeeping():
    configs = [flatten({"seed": 0, "optimizer": {"lr": 1}, "paths": {"x": 1}}),
               flatten({"seed": 1, "optimizer": {"lr": 2}, "paths": {"x": 2}, "extra": [1, 2]})]
    assert differing_keys(configs) == ["optimizer.lr", "extra"]


def test_runs_differing_in_lr_are_never_pooled_as_seeds():
    runs = [_run(1e-4, 0, 0.6), _run(1e-4, 1, 0.8, workers=4), _run(3e-4, 0, 0.9)]
    groups, keys = group_runs(runs)
    assert keys == ["optimizer.lr"] and [(g.label, len(g.runs)) for g in groups] == [
        ("optimizer.lr=0.0001", 2), ("optimizer.lr=0.0003", 1)]
    text, rows = runs_table(runs)
    assert "| optimizer.lr=0.0001 | finetuned | 70.0 ± 14.1 (2) | 35.0 ± 7.1 (2) |" in text
    assert "| optimizer.lr=0.0003 | wiseft best (α=1, by avg shifts) | 90.0 | 30.0 |" in text
    assert rows[0]["photo/mean"] == pytest.approx(70.0) and rows[0]["seeds"] == [0, 1]
    assert pooled_differences(runs) == ["optimizer.lr (0.0001, 0.0003)"]


def test_each_column_is_aggregated_by_its_primary_metric():
    # WILDS and video sets: macro F1 / pm-10 first (their primary), top-1 / pm-0 after; a mixed shift average
    def run(seed: int, f1: float, pm10: float) -> Run:
        rows = [{"model": "finetuned", "alpha": None, "photo/top1": 0.8, "iwild/macro_f1": f1, "iwild/top1": 0.9,
                 "vid/pm10": pm10, "vid/pm0": 0.7, "avg_shifts/primary": (f1 + pm10) / 2}]
        return Run(path=Path(f"out/{seed}/results.jsonl"), rows=rows, seed=seed,
                   config=OmegaConf.create({"seed": seed}))

    text, rows = runs_table([run(0, 0.2, 0.4), run(1, 0.4, 0.6)])
    assert "| runs | model | photo | iwild [macro_f1] | vid [pm10] | avg shifts [primary] |" in text
    # macro F1 30 ± 14.1 (not top-1's 90), pm-10 50 ± 14.1 (not pm-0's 70), the mixed average 40 ± 14.1
    assert "| all runs | finetuned | 80.0 ± 0.0 (2) | 30.0 ± 14.1 (2) | 50.0 ± 14.1 (2) | 40.0 ± 14.1 (2) |" in text
    assert rows[0]["iwild/mean"] == pytest.approx(30.0) and rows[0]["vid/mean"] == pytest.approx(50.0)
    assert "primary score" in text


def test_the_cli_makes_a_table_without_a_paper(tmp_path, capsys):
    for lr in ("1e-4", "3e-4"):
        run = tmp_path / lr
        atomic_write_text(run / "config.yaml", f"seed: 0\noptimizer:\n  lr: {lr}\n")
        write_jsonl(run / "results.jsonl", [{"model": "finetuned", "alpha": None, "photo/top1": 0.5}])
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert "groups differ in optimizer.lr" in capsys.readouterr().out
    assert (tmp_path / "report" / "runs.csv").read_text().startswith("group,model,runs,seeds")


def test_runs_without_a_config_are_pooled_and_the_table_says_so():
    bare = [Run(path=Path(f"out/{i}/results.jsonl"), rows=_run(1e-4, i, 0.5 + i / 10).rows, seed=i) for i in (0, 1)]
    text, rows = runs_table([*bare, _run(3e-4, 0, 0.9)])
    assert "| (no config.yaml) | finetuned | 55.0 ± 7.1 (2) |" in text
    assert "2 runs have no config.yaml: they are pooled without knowing whether they differ" in text
    assert [r["runs"] for r in rows if r["group"] == "(no config.yaml)"] == [2, 2, 2]


def test_a_paper_table_that_pools_runs_differing_in_more_than_the_seed_says_so(tmp_path):
    from wiseft_lab.reporting.paper.build import build_report
    from wiseft_lab.reporting.paper.published import get_table
    from wiseft_lab.reporting.paper.runs import find_results, load_run

    sets = ["imagenet", "imagenet_v2", "imagenet_r", "imagenet_sketch", "objectnet", "imagenet_a"]
    for lr in ("1e-4", "3e-4"):
        run = tmp_path / lr
        atomic_write_text(run / "config.yaml", f"seed: 0\nfinetune:\n  method: e2e\noptimizer:\n  lr: {lr}\n")
        write_jsonl(run / "results.jsonl", [{"model": "finetuned", "alpha": 1.0, **{f"{s}/top1": 0.8 for s in sets}}])
    built = build_report(get_table("wiseft_table1_e2e"), [load_run(p) for p in find_results([tmp_path])], {}, None)
    assert any("differ in more than the seed: optimizer.lr (0.0001, 0.0003)" in n for n in built.notes), built.notes
