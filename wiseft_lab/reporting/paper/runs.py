"""Our side of a paper table: the runs' ``results.jsonl`` and configs, and how their evaluation sets map onto the
paper's columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from wiseft_lab.evaluation.suite import AVG_SHIFTS, HOLDOUT
from wiseft_lab.io import read_jsonl
from wiseft_lab.reporting.paper.published import TableSpec
from wiseft_lab.reporting.tables import scores

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
    """Our evaluation sets (and set groups) that have a score in the rows (first-seen order), without the average
    and held-out."""
    names: list[str] = []
    for row in rows:
        for key in scores(row):
            name = key.split("/", 1)[0]
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


def refusal(spec: TableSpec, run: Run, sets: Sequence[str]) -> ReportError:
    wanted = "; ".join(f"{c['label']}: {', '.join(c.get('sets', [])) or '-'}" for c in spec.columns
                       if c.get("role") != "average")
    ref = next(c for c in spec.columns if c.get("role") == "reference")
    example = ",".join(f"{c['key']}={s}" for c, s in zip(
        [c for c in spec.columns if c.get("role") != "average"], sets, strict=False))
    return ReportError(
        f"{run.path} cannot fill {spec.name}: its evaluation sets are {list(sets)}, and none of them is the paper's "
        f"reference column {ref['label']}. The table's columns and the set names accepted for each: {wanted}. "
        f"If your sets stand for the paper's columns, say which with --columns, e.g. --columns {example}")


