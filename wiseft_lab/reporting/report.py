"""The paper tables: our numbers from run directories, the published numbers, and the differences, per cell.

``wiseft-lab-report --table <name> RUN_OR_MULTIRUN_DIR... --out DIR`` (see :mod:`wiseft_lab.report_cli`) reads
every ``results.jsonl`` under the given paths (and the ``config.yaml`` beside it: method, seed, model), maps our
evaluation sets onto the paper's columns, aggregates several runs (seeds) per cell as mean ± std (n), and writes
``report.md``, ``report.tex``, ``report.csv``, ``report.json`` and ``report.png`` (the WiSE-FT curve against the
published points, or the soups scatter). A cell our runs did not produce is shown as missing ("—"), never filled.

Row semantics (the table's data file names them): ``zeroshot`` / ``finetuned`` / ``wiseft`` at a given alpha;
"optimal alpha" follows the paper: every column, the average included, takes its own best alpha
(:func:`wiseft_lab.reporting.tables.table1_rows`), chosen on the seed-mean of the sweep; the cell shows the mean
± std across runs at that alpha. Soup rows are the ``model`` names the soups merge writes (``uniform_soup``,
``greedy_soup``, ``learned_soup``, ``learned_soup_per_layer``, ``ensemble``; the best individual model is the
``ingredient`` row with ``best_individual: true``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from omegaconf import OmegaConf

from wiseft_lab.evaluation.metrics import harmonic_mean
from wiseft_lab.evaluation.suite import AVG_SHIFTS, HOLDOUT
from wiseft_lab.io import atomic_write_text, read_jsonl, write_csv, write_json
from wiseft_lab.reporting.published import TableSpec, get_table
from wiseft_lab.reporting.tables import markdown_table, table1_rows

MISSING = "—"
NON_SETS = {AVG_SHIFTS, HOLDOUT}


class ReportError(ValueError):
    """The runs cannot fill the requested table (wrong set names, nothing matching, ...): the message says why."""


# ------------------------------------------------------------------------------------------------ reading runs
@dataclass
class Run:
    """One ``results.jsonl`` and what its ``config.yaml`` says about it."""

    path: Path
    rows: list[dict[str, Any]]
    method: str | None = None
    seed: int | None = None
    arch: str | None = None
    data: str | None = None
    config: Any = None

    @property
    def name(self) -> str:
        return str(self.path.parent)


def find_results(paths: Sequence[str | Path]) -> list[Path]:
    """Every ``results.jsonl``: a file given directly, a run directory's own, or all under a multirun directory."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif (path / "results.jsonl").is_file():
            found.append(path / "results.jsonl")
        elif path.is_dir():
            below = sorted(path.rglob("results.jsonl"))
            if not below:
                raise ReportError(f"No results.jsonl under {path}")
            found.extend(below)
        else:
            raise ReportError(f"{path} does not exist")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _select(cfg, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None) if cfg is not None else None


def load_run(path: Path) -> Run:
    config = path.parent / "config.yaml"
    cfg = OmegaConf.load(config) if config.is_file() else None
    seed = _select(cfg, "seed")
    return Run(path=path, rows=read_jsonl(path), method=_select(cfg, "finetune.method"),
               seed=None if seed is None else int(seed), arch=_select(cfg, "model.arch"),
               data=_select(cfg, "data.name"), config=cfg)


def set_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Our evaluation sets that have a top-1 in the rows (first-seen order), without the average and held-out."""
    names: list[str] = []
    for row in rows:
        for key in row:
            if key.endswith("/top1"):
                name = key[: -len("/top1")]
                if name not in NON_SETS and name not in names:
                    names.append(name)
    return names


# ------------------------------------------------------------------------------------------------ columns
def parse_mapping(items: Sequence[str] | None) -> dict[str, str]:
    """``["IN=photo,Sketch=sketch", "A=clutter"]`` -> ``{"IN": "photo", "Sketch": "sketch", "A": "clutter"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in filter(None, (p.strip() for p in item.split(","))):
            if "=" not in part:
                raise ReportError(f"--columns takes PAPER_COLUMN=OUR_SET pairs, not {part!r}")
            key, value = (s.strip() for s in part.split("=", 1))
            out[key] = value
    return out


def _column_key(spec: TableSpec, name: str) -> str:
    for col in spec.columns:
        if name.lower() in (col["key"].lower(), col["label"].lower()):
            return col["key"]
    raise ReportError(f"--columns: {spec.name} has no column {name!r}; its columns are "
                      + ", ".join(f"{c['key']} ({c['label']})" for c in spec.columns if c.get("role") != "average"))


def map_columns(spec: TableSpec, sets: Sequence[str], explicit: Mapping[str, str]) -> dict[str, str]:
    """Paper column key -> our set name: the explicit mapping first, then each column's accepted names."""
    chosen = {_column_key(spec, k): v for k, v in explicit.items()}
    mapping: dict[str, str] = {}
    for col in spec.columns:
        if col.get("role") == "average":
            continue
        if col["key"] in chosen:
            mapping[col["key"]] = chosen[col["key"]]
            continue
        hit = next((s for s in col.get("sets", []) if s in sets), None)
        if hit is not None:
            mapping[col["key"]] = hit
    return mapping


def _refusal(spec: TableSpec, run: Run, sets: Sequence[str]) -> ReportError:
    wanted = "; ".join(f"{c['label']}: {', '.join(c.get('sets', [])) or '-'}" for c in spec.columns
                       if c.get("role") != "average")
    ref = next(c for c in spec.columns if c.get("role") == "reference")
    example = ",".join(f"{c['key']}={s}" for c, s in zip(
        [c for c in spec.columns if c.get("role") != "average"], sets, strict=False))
    return ReportError(
        f"{run.path} cannot fill {spec.name}: its evaluation sets are {list(sets)}, and none of them is the paper's "
        f"reference column {ref['label']}. The table's columns and the set names accepted for each: {wanted}. "
        f"If your sets stand for the paper's columns, say which with --columns, e.g. --columns {example}")


# ------------------------------------------------------------------------------------------------ cells
@dataclass
class Cell:
    values: list[float] = field(default_factory=list)   # one per run, in %
    alpha: float | None = None                           # for optimal-alpha cells

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return mean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return stdev(self.values) if len(self.values) > 1 else (0.0 if self.values else None)


@dataclass
class Line:
    """One table row: its spec, our cells, the published values."""

    spec: dict[str, Any]
    cells: dict[str, Cell]
    published: dict[str, float | None]

    def difference(self, col: str) -> float | None:
        ours, theirs = self.cells.get(col), self.published.get(col)
        if ours is None or ours.mean is None or theirs is None:
            return None
        return ours.mean - float(theirs)


@dataclass
class Report:
    spec: TableSpec
    lines: list[Line]
    runs: list[Run]
    notes: list[str]
    points: dict[str, Any] = field(default_factory=dict)   # extra data for the figure


def _paper_row(row: Mapping[str, Any], mapping: Mapping[str, str], spec: TableSpec) -> dict[str, float]:
    """A result row in paper columns (%); the average only when every shift column is there."""
    values: dict[str, float] = {}
    for key, name in mapping.items():
        value = row.get(f"{name}/top1")
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
            notes.append(f"{run.path}: skipped (no <set>/top1 in its rows)")
            continue
        mapping = map_columns(spec, sets, explicit)
        absent = {k: v for k, v in mapping.items() if v not in sets}
        if absent:
            notes.append(f"{run.path}: --columns names sets it did not evaluate ({', '.join(sorted(absent.values()))})")
            mapping = {k: v for k, v in mapping.items() if k not in absent}
        if ref_key not in mapping:
            raise _refusal(spec, run, sets)
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
    report = Report(spec, lines, [p.run for p in prepared], notes)
    report.points = {"prepared": prepared}
    return report


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


# ------------------------------------------------------------------------------------------------ rendering
def _fmt(value: float | None, decimals: int, signed: bool = False) -> str:
    if value is None:
        return MISSING
    text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    return text.replace("-", "−") if signed else text


def format_cell(cell: Cell | None, decimals: int) -> str:
    """``mean ± std (n)`` (just ``mean`` for one run), ``α=...`` for optimal-alpha cells, ``—`` when missing."""
    if cell is None or cell.mean is None:
        return MISSING
    text = f"{cell.mean:.{decimals}f}"
    if cell.n > 1:
        text += f" ± {cell.std:.{decimals}f} ({cell.n})"
    if cell.alpha is not None:
        text += f" α={cell.alpha:g}"
    return text


def display_columns(report: Report) -> list[tuple[str, str]]:
    """(key, header) of the columns the table shows."""
    spec = report.spec
    if spec.kind == "base_to_novel":
        return [(f"{m['key']}/{c['key']}", f"{m['label']} {c['label']}") for m in spec.data["models"]
                for c in spec.columns]
    return [(c["key"], c["label"]) for c in spec.columns if c.get("show", True)]


def _source_line(spec: TableSpec) -> str:
    src = spec.source
    return (f"{src['paper']} ({src.get('venue', '')}, arXiv {src['arxiv']}). Table: {src['table']}. "
            f"Model: {src['model']}. Metric: {src['metric']}.")


def to_markdown(report: Report) -> str:
    spec, d = report.spec, report.spec.decimals
    cols = display_columns(report)
    body = []
    for line in report.lines:
        body.append([f"**{line.spec['label']}**", "ours", *[format_cell(line.cells.get(k), d) for k, _ in cols]])
        body.append(["", "paper", *[_fmt(line.published.get(k), d) for k, _ in cols]])
        body.append(["", "Δ", *[_fmt(line.difference(k), d, signed=True) for k, _ in cols]])
    text = f"# {spec.title}\n\n"
    text += markdown_table(["", "", *[h for _, h in cols]], body)
    text += ("\n*ours*: mean ± std (number of runs) over the runs given; a single run shows its value. "
             f"Δ = ours − paper, in points. {MISSING} = not produced by our runs (never filled in) or not published.\n")
    if any(line.spec.get("optimal") for line in report.lines):
        text += ("*Optimal α*: every column, the average included, takes its own best α (an oracle, as in the paper), "
                 "chosen on the mean over runs of the sweep.\n")
    verification = spec.verification
    text += f"\n**Published numbers**: {_source_line(spec)}\n"
    text += f"Verification: {verification['status']}. {verification.get('how', '')}\n"
    for check in verification.get("checks", []):
        text += f"- {check}\n"
    per_row = [(line.spec["label"], line.spec["verified"]) for line in report.lines if line.spec.get("verified")]
    text += "".join(f"- {label}: {status}\n" for label, status in per_row)
    if verification.get("repo_average_note"):
        text += f"- {verification['repo_average_note']}\n"
    text += f"\n**Runs** ({len(report.runs)}):\n" + "".join(f"- `{r.name}`\n" for r in report.runs)
    if report.notes:
        text += "\n**Notes**:\n" + "".join(f"- {n}\n" for n in report.notes)
    return text


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return (out.replace("±", r"$\pm$").replace("α", r"$\alpha$").replace("Δ", r"$\Delta$")
            .replace("−", "$-$").replace(MISSING, "--"))


def to_latex(report: Report) -> str:
    spec, d = report.spec, report.spec.decimals
    cols = display_columns(report)
    lines = ["% Generated by wiseft-lab-report; needs \\usepackage{booktabs}.",
             r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(spec.title)}. Ours: mean $\pm$ std (runs); paper: "
             rf"{latex_escape(spec.source['paper'].split(' (')[0])} (arXiv {spec.source['arxiv']}); "
             r"$\Delta$ = ours $-$ paper (points); -- = missing.}",
             r"\begin{tabular}{ll" + "r" * len(cols) + "}", r"\toprule",
             " & & " + " & ".join(latex_escape(h) for _, h in cols) + r" \\", r"\midrule"]
    for index, line in enumerate(report.lines):
        if index:
            lines.append(r"\midrule")
        lines.append(latex_escape(line.spec["label"]) + " & ours & "
                     + " & ".join(latex_escape(format_cell(line.cells.get(k), d)) for k, _ in cols) + r" \\")
        lines.append(" & paper & " + " & ".join(latex_escape(_fmt(line.published.get(k), d)) for k, _ in cols)
                     + r" \\")
        lines.append(r" & $\Delta$ & " + " & ".join(latex_escape(_fmt(line.difference(k), d, signed=True))
                                                    for k, _ in cols) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def to_rows(report: Report) -> list[dict[str, Any]]:
    """Long format for CSV/JSON: one record per (row, column) with ours, the paper's and the difference."""
    out = []
    for line in report.lines:
        for key, header in display_columns(report):
            cell = line.cells.get(key)
            published = line.published.get(key)
            out.append({"table": report.spec.name, "row": line.spec["key"], "row_label": line.spec["label"],
                        "column": key, "column_label": header,
                        "ours_mean": _round(None if cell is None else cell.mean),
                        "ours_std": _round(None if cell is None or cell.n < 2 else cell.std),
                        "n": 0 if cell is None else cell.n,
                        "alpha": None if cell is None else cell.alpha,
                        "ours_values": "" if cell is None else " ".join(f"{v:.4f}" for v in cell.values),
                        "published": published, "difference": _round(line.difference(key)),
                        "published_status": line.spec.get("verified") or report.spec.verification["status"]})
    return out


def write_report(report: Report, out_dir: str | Path, figure: bool = True) -> dict[str, Path]:
    """``report.md``, ``report.tex``, ``report.csv``, ``report.json`` and (``figure``) ``report.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"markdown": atomic_write_text(out / "report.md", to_markdown(report)),
               "latex": atomic_write_text(out / "report.tex", to_latex(report))}
    rows = to_rows(report)
    written["csv"] = write_csv(out / "report.csv", rows)
    written["json"] = write_json(out / "report.json", {
        "table": report.spec.name, "title": report.spec.title, "source": report.spec.source,
        "verification": report.spec.verification, "runs": [r.name for r in report.runs], "notes": report.notes,
        "cells": rows})
    if figure:
        from wiseft_lab.reporting.report_figures import render_figure

        path = render_figure(report, out / "report.png")
        if path is not None:
            written["figure"] = path
    return written


def report(table: str, paths: Sequence[str | Path], out_dir: str | Path | None = None,
           columns: Sequence[str] | Mapping[str, str] | None = None, method: str | None = None,
           figure: bool = True) -> tuple[Report, dict[str, Path]]:
    """Everything ``wiseft-lab-report`` does, as a function: build the table, write its files."""
    spec = get_table(table)
    mapping = dict(columns) if isinstance(columns, Mapping) else parse_mapping(columns)
    runs = [load_run(p) for p in find_results(paths)]
    built = build_report(spec, runs, mapping, method)
    written = write_report(built, out_dir or Path("outputs") / "reports" / table, figure=figure)
    return built, written
