"""A report's cells: our values per (row, column) across runs, the published ones, and the differences."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean, stdev
from typing import Any

from wiseft_lab.reporting.paper.published import TableSpec
from wiseft_lab.reporting.paper.runs import Run


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


