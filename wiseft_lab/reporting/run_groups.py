"""A table of any runs or sweeps, without a paper table: runs grouped by what differs in their configs, aggregated
over the seed only.

Two runs are replicates when their resolved ``config.yaml`` files agree on everything but the seed (and keys that
do not change results: paths, logging, workers, resume). Grouping by every other differing key means runs with
lr 1e-4 and 3e-4 are never averaged as if they were seeds; runs without a ``config.yaml`` cannot be checked and the
table says so. A random search drawn from ``seed`` (``${draw:...}``) differs in the drawn values, so each run is its
own group.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from wiseft_lab.evaluation.suite import AVG_SHIFTS, score_key
from wiseft_lab.reporting.paper.cells import Cell
from wiseft_lab.reporting.paper.runs import Run, set_names
from wiseft_lab.reporting.tables import column_label, markdown_table, metric_name, score

# Keys whose differences do not make runs different experiments (prefixes of dotted keys).
NOT_COMPARED = ("seed", "resume", "paths", "checkpoints", "logger", "data.num_workers", "eval.num_workers",
                "eval.cache", "eval.cache_max_gb", "eval.cache_device", "eval.save_predictions")
NO_CONFIG = "(no config.yaml)"


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """``{"optimizer.lr": "0.001", ...}``: every leaf of a config as JSON text (lists are leaves)."""
    if isinstance(node, Mapping):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(node, sort_keys=True, default=str)}


def _compared(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in NOT_COMPARED)


def differing_keys(configs: Sequence[Mapping[str, str]]) -> list[str]:
    """The compared keys whose value (or presence) is not the same in every flattened config, in first-seen order."""
    keys = dict.fromkeys(k for c in configs for k in c if _compared(k))
    return [k for k in keys if len({c.get(k) for c in configs}) > 1]


@dataclass
class Group:
    label: str                       # "optimizer.lr=0.001 finetune.epochs=5", or "all runs"
    runs: list[Run] = field(default_factory=list)


def _value(text: str | None) -> str:
    return "-" if text is None else str(json.loads(text))


def group_runs(runs: Sequence[Run]) -> tuple[list[Group], list[str]]:
    """Runs grouped by their differing config keys (seed excluded), and the keys that tell the groups apart."""
    flat = [flatten(OmegaConf.to_container(r.config, resolve=False)) if r.config is not None else None for r in runs]
    keys = differing_keys([f for f in flat if f is not None])
    groups: dict[str, Group] = {}
    for run, config in zip(runs, flat, strict=True):
        described = " ".join(f"{k}={_value(config.get(k))}" for k in keys) if config is not None else NO_CONFIG
        label = described or "all runs"
        groups.setdefault(label, Group(label)).runs.append(run)
    return list(groups.values()), keys


def _line_key(row: Mapping[str, Any]) -> tuple:
    return row["model"], row.get("alpha"), row.get("ingredient")


def _line_label(key: tuple) -> str:
    model, alpha, ingredient = key
    return model + (f" {ingredient}" if ingredient is not None else "") + \
        (f" (α={float(alpha):g})" if model == "wiseft" and alpha is not None else "")


def group_lines(group: Group, columns: Sequence[str]) -> list[tuple[str, dict[str, Cell]]]:
    """Per model of the group's runs (first-seen order): mean ± std across its runs of each column's primary score
    (top-1, macro F1, worst-region accuracy, pm-k ...). WiSE-FT shows alpha=0.5 and the alpha whose seed-mean
    average over the shifts is best."""
    cells: dict[tuple, dict[str, Cell]] = {}
    for run in group.runs:
        for row in run.rows:
            line = cells.setdefault(_line_key(row), {})
            for col in columns:
                value = score(row, col)
                if value is not None:
                    line.setdefault(col, Cell()).values.append(100.0 * value)
    wiseft = {k: v for k, v in cells.items() if k[0] == "wiseft" and k[1] is not None}
    shown = [(_line_label(k), v) for k, v in cells.items() if k[0] != "wiseft"]
    half = next((k for k in wiseft if math.isclose(float(k[1]), 0.5)), None)
    if half is not None:
        shown.append((_line_label(half), wiseft[half]))
    scored = {k: v[AVG_SHIFTS].mean for k, v in wiseft.items() if AVG_SHIFTS in v}
    if scored:
        best = max(scored, key=scored.get)
        shown.append((f"wiseft best (α={float(best[1]):g}, by avg shifts)", wiseft[best]))
    return shown


def _cell(cell: Cell | None) -> str:
    if cell is None or cell.mean is None:
        return "-"
    return f"{cell.mean:.1f}" if cell.n == 1 else f"{cell.mean:.1f} ± {cell.std:.1f} ({cell.n})"


def runs_table(runs: Sequence[Run]) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown table and its CSV rows (means, stds and counts per column)."""
    groups, keys = group_runs(runs)
    all_rows = [row for run in runs for row in run.rows]
    sets = set_names(all_rows)
    columns = [*sets, AVG_SHIFTS] if any(score_key(r, AVG_SHIFTS) for r in all_rows) else sets
    body, csv_rows = [], []
    for group in groups:
        seeds = sorted({r.seed for r in group.runs if r.seed is not None})
        for label, line in group_lines(group, columns):
            body.append([group.label, label, *(_cell(line.get(c)) for c in columns)])
            record: dict[str, Any] = {"group": group.label, "model": label, "runs": len(group.runs), "seeds": seeds}
            for col in columns:
                cell = line.get(col)
                record.update({f"{col}/mean": cell.mean if cell else None, f"{col}/std": cell.std if cell else None,
                               f"{col}/n": cell.n if cell else 0})
            csv_rows.append(record)
    header = ["runs", "model", *[column_label(all_rows, c, reference="") for c in columns]]
    what = ("Top-1 (%)" if {metric_name(all_rows, c) for c in columns} <= {"top1", None} else
            "Each column's primary score (%; top-1 unless its metric is named in brackets)")
    notes = [f"{len(runs)} runs in {len(groups)} groups. {what}, mean ± std (n) over the runs of a group, which "
             "differ in the seed only" + (f"; groups differ in {', '.join(keys)}" if keys else "") + "."]
    unchecked = next((g for g in groups if g.label == NO_CONFIG), None)
    if unchecked is not None:
        notes.append(f"{len(unchecked.runs)} runs have no config.yaml: they are pooled without knowing whether they "
                     "differ in anything but the seed.")
    return markdown_table(header, body) + "\n" + "\n".join(f"- {n}" for n in notes) + "\n", csv_rows


def pooled_differences(runs: Sequence[Run]) -> list[str]:
    """``optimizer.lr (0.0001, 0.0003)`` for each compared key in which runs pooled together differ."""
    flat = [flatten(OmegaConf.to_container(r.config, resolve=False)) for r in runs if r.config is not None]
    return [f"{k} ({', '.join(sorted({_value(f.get(k)) for f in flat}))})" for k in differing_keys(flat)]
