"""WILDS iWildCam (v2.0) and FMoW (v1.1) from the layout the official ``wilds`` package downloads, with its splits.

The ``wilds`` package itself is not used: it needs pandas, scikit-learn and ogb. The CSV files are read with the
csv module and the semantics of p-lambda/wilds (``wilds/datasets/iwildcam_dataset.py``, ``fmow_dataset.py``,
official split scheme) are reproduced:

* iWildCam: the split is the ``split`` column of ``metadata.csv`` (``train``, ``val`` = OOD val, ``test`` = OOD
  test, ``id_val``, ``id_test``); label = ``y`` (182 classes); every image is ``train/<filename>``; the group is the
  camera location (``location_remapped``). Scored by macro F1 over the classes present (primary) and top-1.
* FMoW: ``time_after_2016``: OOD test = ``split == test`` with a timestamp in 2016 or later, OOD val = ``split == val``
  in 2013-2015, ``id_*``/``train`` = their split before 2013; ``seq`` rows are left out; image ``i`` is
  ``images/rgb_img_<i>.png`` with i the row of ``rgb_metadata.csv``; label = position of ``category`` in the 62
  categories; region = ``country_code_mapping.csv``'s ``region`` of the country code ("Other" when unmapped);
  year = 2002..2017. Scored by worst-region accuracy (regions with examples, "Other" excluded; primary), top-1
  and worst-year accuracy.

``TaskData.extras``: ``metrics`` (primary first), ``groups`` / ``group_names`` (``-1`` = in no group: FMoW's
"Other" region), ``split`` (the WILDS split name). Class names and prompts are WiSE-FT's
(``metadata/wilds.json``; the prompts are the template sets ``wilds_fmow`` and ``wilds_iwildcam``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.datasets import ImageList
from wiseft_lab.data.layouts import find_dir, layout_error, metadata, with_layout_check

SPLITS = ("train", "val", "test", "id_val", "id_test")  # WILDS' names: val / test are the OOD ones
OOD_TEST_START = datetime(2016, 1, 1, tzinfo=timezone.utc)  # FMoW split scheme "time_after_2016"
OOD_VAL_START = datetime(2013, 1, 1, tzinfo=timezone.utc)   # three years before it
FMOW_YEARS = tuple(range(2002, 2018))
OTHER_REGION = "Other"

LAYOUT_IWILDCAM = """\
<data_root>/iwildcam_v2.0/metadata.csv   (columns split, filename, y, location_remapped, ...)
<data_root>/iwildcam_v2.0/train/<filename>.jpg   (every image of every split; also categories.csv,
    RELEASE_v2.0.txt: what wilds.get_dataset("iwildcam", root_dir=<data_root>, download=True) unpacks)"""
LAYOUT_FMOW = """\
<data_root>/fmow_v1.1/rgb_metadata.csv   (columns split, category, country_code, timestamp, ...)
<data_root>/fmow_v1.1/country_code_mapping.csv   (columns alpha-3, region, ...)
<data_root>/fmow_v1.1/images/rgb_img_<row>.png   (what wilds.get_dataset("fmow", root_dir=<data_root>,
    download=True) unpacks)"""


def _wilds_meta(name: str) -> dict:
    return metadata("wilds")[name]


def _check_split(split: str, title: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{title} has the WILDS splits {', '.join(SPLITS)} (val/test: out of distribution), "
                         f"not {split!r}")


def _files(title: str, layout: str, candidates: Sequence[str], needed: Sequence[str], root, path) -> Path:
    directory = find_dir(root, candidates, title=title, layout=layout, path=path)
    missing = [n for n in needed if not (directory / n).exists()]
    if missing:
        raise layout_error(title, f"missing in {directory}: {', '.join(missing)}", layout)
    return directory


def _read_csv(file: Path, columns: Sequence[str], title: str, layout: str) -> list[dict[str, str]]:
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        absent = [c for c in columns if c not in (reader.fieldnames or ())]
        if absent:
            raise layout_error(title, f"{file} has no column(s) {', '.join(absent)}", layout)
        return list(reader)


def _first_image_exists(samples: list[tuple[str, int]], title: str, layout: str) -> None:
    if samples and not Path(samples[0][0]).is_file():
        raise layout_error(title, f"image not found: {samples[0][0]}", layout)


def _names(names: Sequence[str], clean: bool) -> list[str]:
    return [n.replace("_", " ") if clean else n for n in names]


# ---------------------------------------------------------------------------------------------- iWildCam
IWILDCAM_DIRS = ("iwildcam_v2.0",)
IWILDCAM_COLUMNS = ("split", "filename", "y", "location_remapped")


def _iwildcam_dir(split: str, root, path) -> Path:
    _check_split(split, "iWildCam")
    return _files("iWildCam", LAYOUT_IWILDCAM, IWILDCAM_DIRS, ("metadata.csv", "train"), root, path)


def check_iwildcam(split: str = "test", *, root=None, path=None, **_) -> None:
    directory = _iwildcam_dir(split, root, path)
    with open(directory / "metadata.csv", newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    absent = [c for c in IWILDCAM_COLUMNS if c not in header]
    if absent:
        raise layout_error("iWildCam", f"{directory / 'metadata.csv'} has no column(s) {', '.join(absent)}",
                           LAYOUT_IWILDCAM)


@with_layout_check(check_iwildcam)
def iwildcam(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
             path: str | None = None, templates: str | Sequence[str] | None = None,
             clean_names: bool = True) -> TaskData:
    """iWildCam2020-WILDS ``split`` (``test``: OOD test, WiSE-FT's ``IWildCamOOD``; ``id_test``: ``IWildCamID``).

    182 classes named as WiSE-FT names them (lower-cased English names); ``templates`` default: WiSE-FT's two
    iWildCam prompts. Groups: ``location`` (the camera trap, ``location_remapped``).
    """
    directory = _iwildcam_dir(split, root, path)
    rows = _read_csv(directory / "metadata.csv", IWILDCAM_COLUMNS, "iWildCam", LAYOUT_IWILDCAM)
    classnames = _wilds_meta("iwildcam")["classnames"]
    labels = np.asarray([int(r["y"]) for r in rows], dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classnames)):
        raise layout_error("iWildCam", f"labels y of {directory / 'metadata.csv'} outside 0..{len(classnames) - 1}: "
                                       "not the v2.0 release", LAYOUT_IWILDCAM)
    locations = np.asarray([int(r["location_remapped"]) for r in rows], dtype=np.int64)
    chosen = [i for i, r in enumerate(rows) if r["split"] == split]
    samples = [(str(directory / "train" / rows[i]["filename"]), int(labels[i])) for i in chosen]
    if not samples:
        raise layout_error("iWildCam", f"{directory / 'metadata.csv'} has no rows of split {split!r}", LAYOUT_IWILDCAM)
    _first_image_exists(samples, "iWildCam", LAYOUT_IWILDCAM)
    n_locations = int(locations.max()) + 1  # WILDS: n_groups = max(location_remapped) + 1 over the whole set
    return TaskData(
        ImageList(samples, transform), _names(classnames, clean_names),
        "wilds_iwildcam" if templates is None else templates,
        expected_size=_wilds_meta("iwildcam")["official_sizes"][split],
        description=f"iWildCam-WILDS {split} ({directory})",
        extras={"root": str(directory), "split": split, "metrics": ["macro_f1", "top1"],
                "groups": {"location": locations[chosen]},
                "group_names": {"location": [str(i) for i in range(n_locations)]}},
    )


# -------------------------------------------------------------------------------------------------- FMoW
FMOW_DIRS = ("fmow_v1.1",)
FMOW_COLUMNS = ("split", "category", "country_code", "timestamp")


def _fmow_dir(split: str, root, path) -> Path:
    _check_split(split, "FMoW")
    return _files("FMoW", LAYOUT_FMOW, FMOW_DIRS, ("rgb_metadata.csv", "country_code_mapping.csv", "images"),
                  root, path)


def check_fmow(split: str = "test", *, root=None, path=None, **_) -> None:
    _fmow_dir(split, root, path)


def _timestamp(text: str) -> datetime:
    """An FMoW timestamp (ISO 8601, ``Z`` = UTC) as an aware datetime; naive ones are taken as UTC (as pandas)."""
    iso = re.sub(r"\.(\d+)", lambda m: "." + m.group(1)[:6].ljust(6, "0"), text.strip().replace("Z", "+00:00"))
    parsed = datetime.fromisoformat(iso)  # fractions padded to 6 digits: Python 3.10 accepts no other length
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def fmow_split_of(split_column: str, when: datetime) -> str | None:
    """The WILDS split (official scheme ``time_after_2016``) of a row, or None when no split uses it."""
    if split_column == "seq":
        return None
    ood_test, ood_val = when >= OOD_TEST_START, OOD_VAL_START <= when < OOD_TEST_START
    if ood_test:
        return "test" if split_column == "test" else None
    if ood_val:
        return "val" if split_column == "val" else None
    return {"train": "train", "val": "id_val", "test": "id_test"}.get(split_column)


@with_layout_check(check_fmow)
def fmow(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
         path: str | None = None, templates: str | Sequence[str] | None = None,
         clean_names: bool = True) -> TaskData:
    """FMoW-WILDS ``split`` (``test``: OOD test, WiSE-FT's ``FMOWOOD``; ``id_test``: ``FMOWID``).

    62 categories (``clean_names=false`` keeps WiSE-FT's underscores); ``templates`` default: WiSE-FT's 16 FMoW
    prompts. Groups: ``region`` (Africa, Americas, Asia, Europe, Oceania; "Other" = -1) and ``year`` (2002..2017).
    """
    directory = _fmow_dir(split, root, path)
    rows = _read_csv(directory / "rgb_metadata.csv", FMOW_COLUMNS, "FMoW", LAYOUT_FMOW)
    mapping = _read_csv(directory / "country_code_mapping.csv", ("alpha-3", "region"), "FMoW", LAYOUT_FMOW)
    region_of = {r["alpha-3"]: r["region"] for r in mapping}
    categories = _wilds_meta("fmow")["classnames"]
    label_of = {c: i for i, c in enumerate(categories)}
    regions = sorted({region_of[c] for c in region_of} - {OTHER_REGION, ""})
    region_index = {r: i for i, r in enumerate(regions)}
    samples, region_groups, year_groups = [], [], []
    for row_index, row in enumerate(rows):
        when = _timestamp(row["timestamp"])
        if fmow_split_of(row["split"], when) != split:
            continue
        if row["category"] not in label_of:
            raise layout_error("FMoW", f"unknown category {row['category']!r} in row {row_index} of "
                                       f"{directory / 'rgb_metadata.csv'}", LAYOUT_FMOW)
        samples.append((str(directory / "images" / f"rgb_img_{row_index}.png"), label_of[row["category"]]))
        region_groups.append(region_index.get(region_of.get(row["country_code"], OTHER_REGION), -1))
        year_groups.append(when.year - FMOW_YEARS[0] if when.year in FMOW_YEARS else -1)
    if not samples:
        raise layout_error("FMoW", f"{directory / 'rgb_metadata.csv'} has no rows of split {split!r}", LAYOUT_FMOW)
    _first_image_exists(samples, "FMoW", LAYOUT_FMOW)
    return TaskData(
        ImageList(samples, transform), _names(categories, clean_names),
        "wilds_fmow" if templates is None else templates,
        expected_size=_wilds_meta("fmow")["official_sizes"][split],
        description=f"FMoW-WILDS {split} ({directory})",
        extras={"root": str(directory), "split": split, "metrics": ["worst_region_acc", "top1", "worst_year_acc"],
                "groups": {"region": np.asarray(region_groups, dtype=np.int64),
                           "year": np.asarray(year_groups, dtype=np.int64)},
                "group_names": {"region": regions, "year": [str(y) for y in FMOW_YEARS]}},
    )
