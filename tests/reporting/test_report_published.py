"""The published-numbers files load, say where they come from, and have the shapes the report's tables need."""

from __future__ import annotations

from statistics import mean

import pytest

from wiseft_lab.reporting.paper.published import files, get_table, load, tables

EXPECTED_TABLES = {"wiseft_table1", "wiseft_table1_e2e", "wiseft_table1_lc", "wiseft_vit_b16", "soups_vit_b32",
                   "clipfit_b2n"}


def test_every_file_loads_with_source_and_verification():
    assert {p.stem for p in files()} >= {"wiseft_table1", "wiseft_vit_b16", "soups_vit_b32", "clipfit_b2n"}
    for path in files():
        data = load(path.stem)
        assert data["id"] == path.stem and data["title"] and data["views"]
        source = data["source"]
        for key in ("paper", "arxiv", "table", "model", "metric"):
            assert source.get(key), f"{path.name}: source.{key} missing"
        verification = data["verification"]
        assert verification["status"] and verification["how"] and verification["checked_on"]
        keys = [row["key"] for row in data["rows"]]
        assert len(keys) == len(set(keys)), f"{path.name}: duplicate row keys"
        for view in data["views"].values():
            assert set(view["rows"]) <= set(keys) and view["title"]


def test_tables_are_registered():
    assert set(tables()) >= EXPECTED_TABLES
    with pytest.raises(KeyError, match="choose from"):
        get_table("wiseft_table9")


@pytest.mark.parametrize("name", sorted(EXPECTED_TABLES - {"clipfit_b2n"}))
def test_shift_tables_have_one_reference_and_an_average_and_values_in_range(name):
    spec = get_table(name)
    roles = [c.get("role") for c in spec.columns]
    assert roles.count("reference") == 1 and roles.count("average") == 1 and roles.count("shift") == 5
    keys = {c["key"] for c in spec.columns}
    for col in spec.columns:
        if col["role"] != "average":
            assert col["sets"], f"{name}: column {col['key']} accepts no set name"
    for row in spec.rows:
        assert set(row["values"]) <= keys
        assert all(0 <= v <= 100 for v in row["values"].values())
        assert row.get("select") or row.get("optimal"), f"{name}: row {row['key']} selects nothing"
        assert row.get("method") in (None, "e2e", "lc")


def _shown(spec) -> list[str]:
    return [c["key"] for c in spec.columns if c.get("show", True)]


def test_wiseft_table1_has_every_cell_and_consistent_averages():
    spec = get_table("wiseft_table1")
    shifts = [c["key"] for c in spec.columns if c["role"] == "shift"]
    assert [r["key"] for r in spec.rows] == ["zeroshot", "lc_finetuned", "e2e_finetuned", "lc_alpha0.5", "lc_optimal",
                                             "e2e_alpha0.5", "e2e_optimal"]
    for row in spec.rows:
        assert set(row["values"]) == set(_shown(spec)), row["key"]
        if not row.get("optimal"):  # the optimal rows' average takes its own alpha: not the mean of the cells
            assert abs(mean(row["values"][s] for s in shifts) - row["values"]["avg_shifts"]) <= 0.051, row["key"]
        else:  # each column's own best alpha can only beat the mean over one alpha
            assert row["values"]["avg_shifts"] <= mean(row["values"][s] for s in shifts) + 0.051
    values = {r["key"]: r["values"] for r in spec.rows}
    assert [values["zeroshot"][k] for k in ("IN", "V2", "R", "Sketch", "ObjectNet", "A", "avg_shifts")] == [
        76.6, 70.5, 89.0, 60.9, 69.1, 77.7, 73.4]
    assert values["e2e_optimal"]["IN"] == 87.1 and values["e2e_alpha0.5"]["avg_shifts"] == 76.9
    assert values["lc_finetuned"]["IN"] == 85.2 and values["lc_optimal"]["avg_shifts"] == 75.9
    assert get_table("wiseft_table1_e2e").methods == {"e2e"} and get_table("wiseft_table1_lc").methods == {"lc"}


def test_vit_b16_rows_and_derived_averages():
    spec = get_table("wiseft_vit_b16")
    shifts = [c["key"] for c in spec.columns if c["role"] == "shift"]
    rows = {r["key"]: r for r in spec.rows}
    assert list(rows) == ["alpha0", "alpha0.5", "alpha1", "optimal"]
    assert rows["alpha1"]["values"]["IN"] == 81.3 and rows["alpha0.5"]["values"]["A"] == 52.2
    for key in ("alpha0", "alpha0.5", "alpha1"):
        vals = rows[key]["values"]
        assert abs(mean(vals[s] for s in shifts) - vals["avg_shifts"]) <= 0.051
        assert rows[key]["derived"] == ["avg_shifts"]  # not in the source: computed, and labelled so
    assert rows["optimal"]["values"] == {}  # not published: shown as missing


def test_soups_table_has_imagenet_and_average_for_every_row():
    spec = get_table("soups_vit_b32")
    assert _shown(spec) == ["IN", "avg_shifts"]
    rows = {r["key"]: (r["values"]["IN"], r["values"]["avg_shifts"]) for r in spec.rows}
    assert rows == {"best_individual": (80.38, 47.83), "uniform_soup": (79.97, 51.45), "greedy_soup": (81.03, 50.75),
                    "learned_soup": (80.89, 51.07), "learned_soup_per_layer": (81.37, 50.87),
                    "ensemble": (81.19, 50.77), "greedy_ensemble": (81.90, 49.44)}
    assert all(r.get("verified") for r in spec.rows)
    from wiseft_lab.merging.soups import RECIPES  # the row names the soups merge writes to results.jsonl

    produced = set(RECIPES.values()) | {"ensemble", "ingredient"}
    for row in spec.rows:
        if row["key"] != "greedy_ensemble":  # not built by the pipeline: always missing
            assert row["select"][0]["model"] in produced, row["key"]


def test_clipfit_table_has_the_eleven_coop_datasets_and_no_invented_numbers():
    spec = get_table("clipfit_b2n")
    assert spec.kind == "base_to_novel"
    assert [r["key"] for r in spec.rows][-1] == "average" and len(spec.rows) == 12
    models = [m["key"] for m in spec.data["models"]]
    for row in spec.rows:
        assert set(row["values"]) == set(models)
        for cols in row["values"].values():
            assert set(cols) == {"base", "novel", "hm"}
            assert all(v is None for v in cols.values())  # not transcribed: the report shows them as missing
    assert spec.verification["status"] == "not transcribed"
