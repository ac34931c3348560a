"""Building a paper table from runs: fixed rows, optimal-alpha rows (each column its own best alpha on the
seed-mean sweep) and the base-to-novel table."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from wiseft_lab.evaluation.metrics import harmonic_mean
from wiseft_lab.evaluation.suite import AVG_SHIFTS
from wiseft_lab.reporting.paper.cells import Cell, Line, Report
from wiseft_lab.reporting.paper.published import TableSpec
from wiseft_lab.reporting.paper.runs import ReportError, Run, map_columns, refusal, set_names
from wiseft_lab.reporting.tables import score, table1_rows


def _paper_row(row: Mapping[str, Any], mapping: Mapping[str, str], spec: TableSpec) -> dict[str, float]:
    """A result row in paper columns (%); the average only when every shift column is there."""
    values: dict[str, float] = {}
    for key, name in mapping.items():
        value = score(row, name)
        if value is not None:
            values[key] = 100.0 * float(value)
    shifts = [c["key"] for c in spec.columns if c.get("role") == "shift"]
    average = next((c["key"] for c in spec.columns if c.get("role") == "average"), None)
    if average and shifts and all(s in values for s in shifts):
        values[average] = mean(values[s] for s in shifts)
    return values


def _matches(row: Mapping[str, Any], select: Mapping[str, Any]) -> bool:
    for key, wanted in select.items():
        have = row.get(key)
        if key == "alpha":
            if have is None or not math.isclose(float(have), float(wanted), abs_tol=1e-6):
                return False
        elif have != wanted:
            return False
    return True


@dataclass
class Prepared:
    run: Run
    method: str | None
    rows: list[tuple[dict[str, Any], dict[str, float]]]   # (result row, its values in paper columns)


def _prepare(spec: TableSpec, runs: Sequence[Run], explicit: Mapping[str, str], default_method: str | None,
             notes: list[str]) -> list[Prepared]:
    methods = spec.methods
    ref_key = next(c["key"] for c in spec.columns if c.get("role") == "reference")
    prepared: list[Prepared] = []
    mappings: dict[tuple, list[str]] = defaultdict(list)
    for run in runs:
        method = run.method or default_method
        if method is None and len(methods) == 1:
            method = next(iter(methods))
            notes.append(f"{run.path}: no finetune.method recorded; taken as {method!r}, the only method of this table")
        if methods and method is not None and method not in methods:
            notes.append(f"{run.path}: skipped (finetune.method={method!r}; this table has {sorted(methods)})")
            continue
        if methods and method is None:
            notes.append(f"{run.path}: no finetune.method recorded (give --method): used for the rows of every method "
                         "only where they need none (zero-shot)")
        sets = set_names(run.rows)
        if not sets:
            notes.append(f"{run.path}: skipped (no <set>/<metric> in its rows)")
            continue
        mapping = map_columns(spec, sets, explicit)
        absent = {k: v for k, v in mapping.items() if v not in sets}
        if absent:
            notes.append(f"{run.path}: --columns names sets it did not evaluate ({', '.join(sorted(absent.values()))})")
            mapping = {k: v for k, v in mapping.items() if k not in absent}
        if ref_key not in mapping:
            raise refusal(spec, run, sets)
        mappings[tuple(mapping.items())].append(run.name)
        rows = []
        for row in run.rows:
            row_method = row.get("method", method)
            rows.append(({**row, "method": row_method}, _paper_row(row, mapping, spec)))
        prepared.append(Prepared(run, method, rows))
    labels = {c["key"]: c["label"] for c in spec.columns}
    for mapping, names in mappings.items():
        shown = ", ".join(f"{labels[k]} <- {v}" for k, v in mapping)
        unmapped = [c["label"] for c in spec.columns if c.get("role") not in ("average",)
                    and c["key"] not in dict(mapping)]
        notes.append(f"Columns of {len(names)} run(s): {shown}"
                     + (f"; not evaluated: {', '.join(unmapped)} (shown as missing, and so is the average)"
                        if unmapped else ""))
    return prepared


def _fixed_line(spec_row: Mapping[str, Any], prepared: Sequence[Prepared]) -> dict[str, Cell]:
    """Per run, the first row matching the row's ``select`` alternatives (and method); one value per run and column.

    A row that needs no method (zero-shot) is the same model in the E2E and the LC run of one seed: identical
    results of one seed count once.
    """
    cells: dict[str, Cell] = defaultdict(Cell)
    want = spec_row.get("method")
    seen: set[tuple] = set()
    for item in prepared:
        for select in spec_row.get("select", []):
            hit = next((vals for row, vals in item.rows if _matches(row, select)
                        and (want is None or row.get("method") == want)), None)
            if hit is None:
                continue
            key = (item.run.seed, tuple(sorted(hit.items())))
            if want is None and item.run.seed is not None and key in seen:
                break
            seen.add(key)
            for col, value in hit.items():
                cells[col].values.append(value)
            break
    return dict(cells)


def sweep_means(spec: TableSpec, prepared: Sequence[Prepared], method: str | None
                ) -> dict[float, dict[str, list[float]]]:
    """alpha -> column -> values across runs, for the WiSE-FT rows of ``method``."""
    sweep: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for item in prepared:
        for row, values in item.rows:
            if row.get("model") != "wiseft" or row.get("alpha") is None:
                continue
            if method is not None and row.get("method") != method:
                continue
            alpha = round(float(row["alpha"]), 6)
            for col, value in values.items():
                sweep[alpha][col].append(value)
    return sweep


def _optimal_line(spec: TableSpec, spec_row: Mapping[str, Any], prepared: Sequence[Prepared],
                  notes: list[str]) -> dict[str, Cell]:
    """Each column's best alpha on the seed-mean sweep (``table1_rows``), and mean ± std across runs there."""
    sweep = sweep_means(spec, prepared, spec_row.get("method"))
    if len(sweep) < 2:
        if sweep:
            notes.append(f"{spec_row['label']}: left missing, the runs evaluated one alpha ({next(iter(sweep)):g}),"
                         " not a sweep")
        return {}
    notes.append(f"{spec_row['label']}: best of alpha in {{{', '.join(f'{a:g}' for a in sorted(sweep))}}}")
    ref = next(c["key"] for c in spec.columns if c.get("role") == "reference")
    shifts = [c["key"] for c in spec.columns if c.get("role") == "shift"]
    average = next((c["key"] for c in spec.columns if c.get("role") == "average"), None)
    rename = {average: AVG_SHIFTS} if average else {}
    mean_rows = [{"model": "wiseft", "alpha": alpha,
                  **{f"{rename.get(col, col)}/top1": mean(vals) / 100.0 for col, vals in cols.items()}}
                 for alpha, cols in sorted(sweep.items())]
    best = next((values for label, values in table1_rows(mean_rows, ref, shifts) if "optimal" in label), {})
    cells: dict[str, Cell] = {}
    for col in [ref, *shifts, *( [average] if average else [])]:
        key = rename.get(col, col)
        if f"alpha:{key}" in best:
            alpha = round(float(best[f"alpha:{key}"]), 6)
            cells[col] = Cell(list(sweep[alpha][col]), alpha=alpha)
    return cells


def build_report(spec: TableSpec, runs: Sequence[Run], columns: Mapping[str, str] | None = None,
                 default_method: str | None = None) -> Report:
    """Our cells for every row of ``spec`` from ``runs``, with the published values."""
    if spec.kind == "base_to_novel":
        return build_b2n_report(spec, runs, columns or {})
    notes: list[str] = []
    prepared = _prepare(spec, runs, columns or {}, default_method, notes)
    lines = []
    for spec_row in spec.rows:
        cells = (_optimal_line(spec, spec_row, prepared, notes) if spec_row.get("optimal")
                 else _fixed_line(spec_row, prepared))
        lines.append(Line(spec_row, cells, dict(spec_row.get("values", {}))))
    if not any(cell.values for line in lines for cell in line.cells.values()):
        raise ReportError(f"None of the {len(runs)} run(s) has a row that belongs to {spec.name} (rows: "
                          + "; ".join(f"{r['label']}: {r.get('select') or 'WiSE-FT sweep'}"
                                      + (f" of finetune.method={r['method']}" if r.get("method") else "")
                                      for r in spec.rows) + ")")
    _arch_note(spec, [p.run for p in prepared], notes)
    _pooling_note(prepared, notes)
    report = Report(spec, lines, [p.run for p in prepared], notes)
    report.points = {"prepared": prepared}
    return report


def _pooling_note(prepared: Sequence[Prepared], notes: list[str]) -> None:
    """Say so when the runs averaged into one method's cells differ in more than the seed."""
    from wiseft_lab.reporting.run_groups import pooled_differences

    for method in dict.fromkeys(p.method for p in prepared):
        differ = pooled_differences([p.run for p in prepared if p.method == method])
        if differ:
            notes.append(f"The {method or 'method-less'} runs averaged into one cell differ in more than the seed: "
                         f"{'; '.join(differ)}. Their ± is not a spread over seeds; report them apart "
                         "(wiseft-lab-report without --table groups them).")


def _arch_note(spec: TableSpec, runs: Sequence[Run], notes: list[str]) -> None:
    wanted = spec.view.get("arch")
    archs = sorted({r.arch for r in runs if r.arch})
    if wanted and archs and archs != [wanted]:
        notes.append(f"The runs used model.arch = {', '.join(archs)}; the published numbers are for {wanted}: "
                     "the differences compare different models.")


# ------------------------------------------------------------------------------------------------ base-to-novel
def _b2n_records(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One record per (run, model): dataset, seed, model label, base and novel top-1 (fractions).

    Runs with a ``config.yaml`` are read by :func:`wiseft_lab.reporting.base_to_novel.collect` (eval sets marked
    ``classes: base|novel``); hand-written rows carry ``dataset``, ``seed``, ``model`` and ``base/top1`` +
    ``novel/top1`` themselves.
    """
    from wiseft_lab.reporting.base_to_novel import collect, model_label

    records: list[dict[str, Any]] = []
    for run in runs:
        if run.config is not None:
            here = run.path.parent.resolve()
            records += [r for r in collect(run.path.parent) if Path(r["run"]).resolve() == here]
            continue
        for row in run.rows:
            if "dataset" in row and "base/top1" in row and "novel/top1" in row:
                records.append({"method": row.get("method", run.method), "dataset": str(row["dataset"]),
                                "seed": row.get("seed", run.seed), "model": model_label(row),
                                "base": float(row["base/top1"]), "novel": float(row["novel/top1"]),
                                "run": str(run.path)})
    return records


def build_b2n_report(spec: TableSpec, runs: Sequence[Run], explicit: Mapping[str, str]) -> Report:
    notes: list[str] = []
    records = _b2n_records(runs)
    if not records:
        raise ReportError("No base-to-novel results in the given runs: a run needs eval sets marked classes: base / "
                          "classes: novel (experiment=b2n), or hand-written rows {dataset, seed, model, base/top1, "
                          "novel/top1}")
    paper_rows = [r for r in spec.rows if not r.get("average")]
    keys = {r["key"] for r in paper_rows}
    labels = {r["label"].lower(): r["key"] for r in paper_rows}
    rename: dict[str, str] = {}
    for paper, ours in explicit.items():
        key = paper if paper in keys else labels.get(paper.lower())
        if key is None:
            raise ReportError(f"--columns: {spec.name} has no data set {paper!r}; its rows are {sorted(keys)}")
        rename[ours] = key
    ours_names = sorted({r["dataset"] for r in records})
    for record in records:
        record["row"] = rename.get(record["dataset"], record["dataset"])
    unknown = sorted({r["dataset"] for r in records if r["row"] not in keys})
    if len(unknown) == len(ours_names):
        raise ReportError(f"The runs' data sets {ours_names} are none of the paper's ({sorted(keys)}); say which paper "
                          f"row each stands for with --columns, e.g. --columns dtd={ours_names[0]}")
    if unknown:
        notes.append(f"Not in the paper's table, left out: {', '.join(unknown)}")
    models = spec.data["models"]
    lines: list[Line] = []
    complete: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for paper_row in spec.rows:
        cells: dict[str, Cell] = {}
        if paper_row.get("average"):
            for model in models:
                per_dataset = complete[model["key"]]
                if per_dataset and len(per_dataset) == len(paper_rows):
                    b, n = mean(p[0] for p in per_dataset), mean(p[1] for p in per_dataset)
                    cells.update({f"{model['key']}/base": Cell([b]), f"{model['key']}/novel": Cell([n]),
                                  f"{model['key']}/hm": Cell([harmonic_mean(b, n)])})
                elif per_dataset:
                    b, n = mean(p[0] for p in per_dataset), mean(p[1] for p in per_dataset)
                    notes.append(f"{model['label']}: average left missing, only {len(per_dataset)} of "
                                 f"{len(paper_rows)} data sets were run (their mean: base {b:.2f}, novel {n:.2f}, "
                                 f"HM {harmonic_mean(b, n):.2f})")
        else:
            for model in models:
                picked = [r for r in records if r["row"] == paper_row["key"] and r["model"] == model["match"]]
                if not picked:
                    continue
                base = Cell([100 * r["base"] for r in picked])
                novel = Cell([100 * r["novel"] for r in picked])
                cells.update({f"{model['key']}/base": base, f"{model['key']}/novel": novel,
                              f"{model['key']}/hm": Cell([harmonic_mean(base.mean, novel.mean)])})
                complete[model["key"]].append((base.mean, novel.mean))
        published = {f"{m}/{c}": v for m, cols in paper_row.get("values", {}).items() for c, v in cols.items()}
        lines.append(Line(paper_row, cells, published))
    notes.append("HM is the harmonic mean of the seed-mean base and novel accuracies (as the papers compute it), "
                 "so it has no ± of its own.")
    report = Report(spec, lines, list(runs), notes)
    report.points = {"records": records}
    return report


