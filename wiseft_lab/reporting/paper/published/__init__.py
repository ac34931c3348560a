"""Published reference numbers: one JSON file per paper table, each with its source and how far it was verified.

A file holds the paper's columns (which of our evaluation-set names each stands for), its rows (the published
values and which ``results.jsonl`` rows they correspond to) and one or more *views*: the tables that
``wiseft-lab-report --table <view>`` renders (e.g. ``wiseft_table1_e2e`` = the zero-shot and end-to-end rows of
WiSE-FT's Table 1). Every file says where its numbers come from (``source``) and what could be checked
(``verification``); a number that could not be verified is labelled so, never guessed.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class TableSpec:
    """One renderable table: a view of a published-numbers file."""

    name: str
    data: dict[str, Any]   # the whole file
    view: dict[str, Any]   # its entry in ``views``

    @property
    def kind(self) -> str:
        return self.data.get("kind", "shifts")

    @property
    def title(self) -> str:
        return self.view.get("title") or self.data["title"]

    @property
    def decimals(self) -> int:
        return int(self.data.get("decimals", 1))

    @property
    def columns(self) -> list[dict[str, Any]]:
        return list(self.data["columns"])

    @property
    def rows(self) -> list[dict[str, Any]]:
        by_key = {row["key"]: row for row in self.data["rows"]}
        return [by_key[key] for key in self.view["rows"]]

    @property
    def methods(self) -> set[str]:
        return {row["method"] for row in self.rows if row.get("method")}

    @property
    def source(self) -> dict[str, Any]:
        return self.data["source"]

    @property
    def verification(self) -> dict[str, Any]:
        return self.data["verification"]


def files() -> list[Path]:
    return sorted(DIR.glob("*.json"))


@functools.cache
def load(file_id: str) -> dict[str, Any]:
    """The parsed file ``published/<file_id>.json``."""
    path = DIR / f"{file_id}.json"
    if not path.is_file():
        raise FileNotFoundError(f"No published-numbers file {path.name} (have: {[p.stem for p in files()]})")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def tables() -> dict[str, TableSpec]:
    """Every view of every file, by name."""
    out: dict[str, TableSpec] = {}
    for path in files():
        data = load(path.stem)
        for name, view in data.get("views", {}).items():
            if name in out:
                raise ValueError(f"Table {name!r} is defined twice ({out[name].data['id']}, {data['id']})")
            out[name] = TableSpec(name, data, view)
    return out


def get_table(name: str) -> TableSpec:
    available = tables()
    if name not in available:
        raise KeyError(f"Unknown table {name!r}; choose from {sorted(available)}")
    return available[name]
