"""wiseft-lab-report: paper tables from hand-written results files (several seeds, missing cells, methods, soups,
base-to-novel) and from the run directories of a real smoke multirun."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from wiseft_lab.report_cli import main
from wiseft_lab.reporting.paper.build import build_report
from wiseft_lab.reporting.paper.published import get_table
from wiseft_lab.reporting.paper.render import format_cell, report, to_latex, to_markdown
from wiseft_lab.reporting.paper.runs import MISSING, ReportError, find_results, load_run

SETS = ["imagenet", "imagenet_v2", "imagenet_r", "imagenet_sketch", "objectnet", "imagenet_a"]
SYNTHETIC_MAP = "IN=photo,V2=sketch,R=cartoon,Sketch=painting,ObjectNet=clutter"


def result(model: str, alpha: float | None, accs: dict[str, float], **extra) -> dict:
    """A results.jsonl row as the pipeline writes it (the first set is the reference)."""
    names = list(accs)
    row = {"model": model, "alpha": alpha, **{f"{s}/top1": v for s, v in accs.items()}}
    if len(names) > 1:
        row["avg_shifts/top1"] = sum(accs[s] for s in names[1:]) / (len(names) - 1)
    return {**row, **{f"n/{s}": 100 for s in names}, **extra}


def write_run(directory: Path, rows: list[dict], method: str | None = None, seed: int = 0,
              arch: str = "ViT-L-14-336-quickgelu") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if method is not None:
        (directory / "config.yaml").write_text(
            f"seed: {seed}\nmodel:\n  arch: {arch}\nfinetune:\n  method: {method}\ndata:\n  name: imagenet\n")
    return directory


def uniform(value: float, sets=SETS, **override: float) -> dict[str, float]:
    return {s: override.get(s, value) for s in sets}


def cells(rep, row_key: str) -> dict:
    return next(line for line in rep.lines if line.spec["key"] == row_key).cells


def build(table: str, paths, columns=None, method=None):
    runs = [load_run(p) for p in find_results(paths)]
    return build_report(get_table(table), runs, columns or {}, method)


# ---------------------------------------------------------------------------------------------- hand-written
def test_several_seeds_give_mean_std_n_and_missing_cells_stay_missing(tmp_path):
    """Three seeds of an E2E run without ObjectNet: mean ± std (3) per cell; ObjectNet and the average missing."""
    no_objectnet = [s for s in SETS if s != "objectnet"]
    for seed, (zs, r_half) in enumerate([(0.70, 0.70), (0.71, 0.50), (0.72, 0.50)]):
        rows = [result("zeroshot", 0.0, uniform(zs, no_objectnet)),
                result("finetuned", 1.0, uniform(0.80, no_objectnet, imagenet_r=0.40)),
                result("wiseft", 0.0, uniform(zs, no_objectnet, imagenet_r=0.60)),
                result("wiseft", 0.5, uniform(0.78, no_objectnet, imagenet_r=r_half, imagenet=0.79)),
                result("wiseft", 1.0, uniform(0.80, no_objectnet, imagenet_r=0.40))]
        write_run(tmp_path / f"sweep/{seed}", rows, method="e2e", seed=seed)
    rep = build("wiseft_table1_e2e", [tmp_path / "sweep"])
    assert len(rep.runs) == 3
    zeroshot = cells(rep, "zeroshot")
    assert zeroshot["IN"].values == pytest.approx([70.0, 71.0, 72.0])
    assert format_cell(zeroshot["IN"], 1) == "71.0 ± 1.0 (3)"
    assert "ObjectNet" not in zeroshot and "avg_shifts" not in zeroshot  # never filled in
    line = next(line for line in rep.lines if line.spec["key"] == "zeroshot")
    assert line.difference("IN") == pytest.approx(71.0 - 76.6) and line.difference("ObjectNet") is None
    # optimal alpha: the best alpha of the seed-mean sweep per column, not each seed's own best
    optimal = cells(rep, "e2e_optimal")
    assert optimal["R"].alpha == 0.0 and optimal["R"].mean == pytest.approx(60.0)  # mean 56.7 at 0.5 < 60 at 0
    assert optimal["IN"].alpha == 1.0 and optimal["IN"].values == pytest.approx([80.0] * 3)
    assert optimal["V2"].alpha == 1.0  # 0.80 beats 0.78 and the zero-shot values
    text = to_markdown(rep)
    assert "| **Zero-shot** | ours | 71.0 ± 1.0 (3) |" in text
    assert f"| ours | 71.0 ± 1.0 (3) | 71.0 ± 1.0 (3) | 71.0 ± 1.0 (3) | 71.0 ± 1.0 (3) | {MISSING} | 71.0 ± 1.0 (3) " \
           f"| {MISSING} |" in text
    assert "| paper | 76.6 | 70.5 | 89.0 | 60.9 | 69.1 | 77.7 | 73.4 |" in text
    assert "| Δ | −5.6 |" in text and "α=0 |" in text
    assert "not evaluated: ObjectNet" in text and "unverified against the paper text" in text
    assert r"71.0 $\pm$ 1.0 (3)" in to_latex(rep) and r"\toprule" in to_latex(rep)


def test_full_table1_takes_each_method_from_its_runs(tmp_path):
    e2e = write_run(tmp_path / "e2e", [result("zeroshot", 0.0, uniform(0.76)), result("finetuned", 1.0, uniform(0.86)),
                                       result("wiseft", 0.5, uniform(0.87))], method="e2e")
    lc = write_run(tmp_path / "lc", [result("zeroshot", 0.0, uniform(0.76)), result("finetuned", 1.0, uniform(0.85)),
                                     result("wiseft", 0.5, uniform(0.84))], method="lc", seed=1)
    rep = build("wiseft_table1", [e2e, lc])
    assert cells(rep, "zeroshot")["IN"].n == 2
    assert cells(rep, "e2e_finetuned")["IN"].values == [86.0] and cells(rep, "lc_finetuned")["IN"].values == [85.0]
    assert cells(rep, "e2e_alpha0.5")["avg_shifts"].values == pytest.approx([87.0])
    assert cells(rep, "lc_alpha0.5")["IN"].values == pytest.approx([84.0])
    assert cells(rep, "lc_optimal") == {} and cells(rep, "e2e_optimal") == {}  # no sweep: missing, not made up
    same_seed = write_run(tmp_path / "lc0", [result("zeroshot", 0.0, uniform(0.76))], method="lc", seed=0)
    assert cells(build("wiseft_table1", [e2e, same_seed]), "zeroshot")["IN"].n == 1  # one model, counted once
    only_e2e = build("wiseft_table1_e2e", [e2e, lc])
    assert len(only_e2e.runs) == 1 and any("skipped (finetune.method='lc'" in n for n in only_e2e.notes)


def test_runs_without_a_config_need_a_method_only_where_the_table_mixes_methods(tmp_path):
    bare = write_run(tmp_path / "bare", [result("zeroshot", 0.0, uniform(0.7)), result("finetuned", 1.0, uniform(0.8))])
    single = build("wiseft_table1_lc", [bare / "results.jsonl"])
    assert cells(single, "lc_finetuned")["IN"].values == [80.0]
    assert any("taken as 'lc'" in n for n in single.notes)
    mixed = build("wiseft_table1", [bare])
    assert cells(mixed, "zeroshot")["IN"].values == [70.0] and cells(mixed, "e2e_finetuned") == {}
    assert any("give --method" in n for n in mixed.notes)
    told = build("wiseft_table1", [bare], method="e2e")
    assert cells(told, "e2e_finetuned")["IN"].values == [80.0] and cells(told, "lc_finetuned") == {}


def test_other_set_names_are_refused_unless_mapped(tmp_path):
    styles = ["photo", "sketch", "cartoon", "painting", "clutter"]
    run = write_run(tmp_path / "styles", [result("zeroshot", 0.0, uniform(0.5, styles)),
                                          result("wiseft", 0.5, uniform(0.6, styles))], method="e2e")
    with pytest.raises(ReportError, match=r"none of them is the paper's reference column IN.*--columns IN=photo"):
        build("wiseft_vit_b16", [run])
    rep = build("wiseft_vit_b16", [run], columns={"IN": "photo", "IN-V2": "sketch", "r": "cartoon"})
    assert cells(rep, "alpha0")["IN"].values == [50.0] and cells(rep, "alpha0")["V2"].values == [50.0]
    assert "Sketch" not in cells(rep, "alpha0") and any("not evaluated: IN-Sketch, ObjectNet, IN-A" in n
                                                         for n in rep.notes)
    with pytest.raises(ReportError, match="has no column 'Q'"):
        build("wiseft_vit_b16", [run], columns={"Q": "photo"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="No results.jsonl"):
        find_results([tmp_path / "empty"])


def test_soups_table_reads_the_soup_rows(tmp_path):
    rows = [result("ingredient", None, uniform(0.79), ingredient="0", best_individual=True, n_ingredients=1),
            result("uniform_soup", None, uniform(0.80, imagenet_a=0.3), n_ingredients=3),
            result("greedy_soup", None, uniform(0.81), n_ingredients=2),
            result("ingredient", None, uniform(0.75), ingredient="1", best_individual=False, n_ingredients=1),
            result("ingredient", None, uniform(0.74), ingredient="2", best_individual=False, n_ingredients=1),
            result("ensemble", None, uniform(0.82), n_ingredients=3)]
    run = write_run(tmp_path / "soup", rows, method="e2e", arch="ViT-B-32-quickgelu")
    built, written = report("soups_vit_b32", [run], tmp_path / "out")
    assert cells(built, "best_individual")["IN"].values == [79.0]
    assert cells(built, "uniform_soup")["avg_shifts"].values == pytest.approx([(80 * 3 + 30 + 80) / 5])
    assert cells(built, "learned_soup") == {} and cells(built, "greedy_ensemble") == {}
    text = (tmp_path / "out/report.md").read_text()
    assert "| **Learned soup** | ours | — | — |" in text and "| paper | 81.37 | 50.87 |" in text
    assert "| ImageNet | Avg shifts |" in text  # the per-shift columns are not part of the paper's table
    ensemble = next(line for line in built.lines if line.spec["key"] == "ensemble")
    assert ensemble.difference("IN") == pytest.approx(82.0 - 81.19) and "| Δ | +0.81 | +31.23 |" in text
    assert written["figure"].is_file() and written["figure"].stat().st_size > 10_000
    assert not any("model.arch" in n for n in built.notes)  # ViT-B-32-quickgelu is the table's model


def test_base_to_novel_table_from_handwritten_rows_and_from_a_run_config(tmp_path):
    rows = [{"dataset": ds, "seed": seed, "model": model, "base/top1": base + 0.01 * seed, "novel/top1": 0.6}
            for ds, base in (("dtd", 0.8), ("eurosat", 0.9)) for seed in (1, 2, 3)
            for model in ("zeroshot", "finetuned")]
    bare = write_run(tmp_path / "bare", rows)
    configured = tmp_path / "configured"
    write_run(configured, [result("zeroshot", 0.0, {"base": 0.7, "novel": 0.65}),
                           result("finetuned", 1.0, {"base": 0.9, "novel": 0.7})])
    (configured / "config.yaml").write_text(
        "seed: 1\nfinetune:\n  method: clipfit\ndata:\n  name: caltech101\neval:\n  reference: base\n  datasets:\n"
        "    base:\n      classes: base\n    novel:\n      classes: novel\n")
    rep = build("clipfit_b2n", [bare, configured])
    dtd = cells(rep, "dtd")
    assert dtd["clipfit/base"].values == pytest.approx([81.0, 82.0, 83.0])
    assert format_cell(dtd["clipfit/base"], 2) == "82.00 ± 1.00 (3)"
    assert dtd["clipfit/hm"].mean == pytest.approx(2 * 82 * 60 / 142)
    assert cells(rep, "caltech101")["clipfit/novel"].values == pytest.approx([70.0])
    assert cells(rep, "average") == {} and any("only 3 of 11 data sets" in n for n in rep.notes)
    assert cells(rep, "imagenet") == {}
    text = to_markdown(rep)
    assert "| **DTD** | ours | 82.00 ± 1.00 (3) | 60.00 ± 0.00 (3) | 69.30 |" in text
    assert "| paper | — | — | — | — | — | — |" in text
    with pytest.raises(ReportError, match="none of the paper's"):
        build("clipfit_b2n", [write_run(tmp_path / "odd", [{**rows[0], "dataset": "textures"}])])
    mapped = build("clipfit_b2n", [tmp_path / "odd"], columns={"dtd": "textures"})
    assert cells(mapped, "dtd")["zeroshot/base"].values == pytest.approx([81.0])


# ---------------------------------------------------------------------------------------------- from a real run
@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory) -> Path:
    """Two seeds of the ViT-B/16 WiSE-FT preset's smoke twin, as one multirun directory."""
    base = tmp_path_factory.mktemp("report_smoke")
    run_cli("experiment=wiseft_vit_b16_e2e", "smoke=tiny", "logger=none", "seed=0,1", cwd=base, multirun=True)
    sweeps = list(base.glob("outputs/multirun/wiseft_vit_b16_e2e/*"))
    assert len(sweeps) == 1
    return sweeps[0]


@pytest.mark.slow
def test_report_from_a_smoke_multirun(smoke_sweep, tmp_path, capsys):
    assert main(["--table", "wiseft_vit_b16", str(smoke_sweep)]) == 2  # synthetic set names: refused
    assert "--columns" in capsys.readouterr().err
    out = tmp_path / "report"
    assert main(["--table", "wiseft_vit_b16", str(smoke_sweep), "--columns", SYNTHETIC_MAP, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# WiSE-FT, CLIP ViT-B/16") and "Written:" in printed
    for name in ("report.md", "report.tex", "report.csv", "report.json", "report.png"):
        assert (out / name).is_file(), name
    with open(out / "report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * 7
    cell = {(r["row"], r["column"]): r for r in rows}
    assert cell[("alpha0", "IN")]["n"] == "2" and cell[("alpha0", "A")]["n"] == "0"  # IN-A was not evaluated
    assert cell[("alpha0", "A")]["ours_mean"] == "" and cell[("alpha0", "avg_shifts")]["ours_mean"] == ""
    assert float(cell[("alpha1", "IN")]["difference"]) == pytest.approx(
        float(cell[("alpha1", "IN")]["ours_mean"]) - 81.3, abs=1e-3)
    assert cell[("optimal", "IN")]["alpha"] != "" and cell[("optimal", "IN")]["published"] == ""
    per_run = [json.loads(line) for line in (smoke_sweep / "0" / "results.jsonl").read_text().splitlines()]
    zero = next(r for r in per_run if r["model"] == "wiseft" and r["alpha"] == 0.0)
    assert float(cell[("alpha0", "IN")]["ours_values"].split()[0]) == pytest.approx(100 * zero["photo/top1"], abs=1e-3)
    markdown = (out / "report.md").read_text()
    assert "± " in markdown and "(2)" in markdown and MISSING in markdown
    assert "model.arch = wiseft-tiny-vit" in markdown


def test_cli_lists_tables_and_the_console_script_is_installed(capsys):
    import subprocess

    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "wiseft_table1_e2e" in listed and "soups_vit_b32" in listed and "clipfit_b2n" in listed
    proc = subprocess.run([Path(sys.executable).parent / "wiseft-lab-report", "--list"], capture_output=True, text=True)
    assert proc.returncode == 0 and "wiseft_table1" in proc.stdout
