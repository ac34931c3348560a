"""Tiny fake copies of WILDS, the video-robustness sets and the corruption releases, in their real layouts."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tests.data_fakes import write_image


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# ------------------------------------------------------------------------------------------------- WILDS
# (split, y, location_remapped): iWildCam's metadata.csv rows (the real file has more columns; these are read)
IWILDCAM_ROWS = (("train", 0, 0), ("train", 5, 1), ("test", 3, 2), ("test", 181, 3), ("id_test", 5, 0),
                 ("val", 2, 4), ("id_val", 1, 1), ("test", 3, 2))


def iwildcam(root: Path, rows: Sequence[tuple[str, int, int]] = IWILDCAM_ROWS, images: bool = True) -> Path:
    """``iwildcam_v2.0/{metadata.csv, categories.csv, RELEASE_v2.0.txt, train/<filename>}``."""
    base = root / "iwildcam_v2.0"
    table = []
    for i, (split, y, location) in enumerate(rows):
        filename = f"{i:04x}cafe.jpg"
        table.append((split, location, f"seq{i // 2}", y, f"2013-0{1 + i % 9}-05 08:00:0{i % 10}.000", filename,
                      location, i // 2, f"img{i}"))
        if images:
            write_image(base / "train" / filename, color=i)
    _write_csv(base / "metadata.csv", ("split", "location_remapped", "seq_id", "y", "datetime", "filename",
                                       "location", "sequence_remapped", "image_id"), table)
    _write_csv(base / "categories.csv", ("y", "category_id", "name"), ((0, 0, "empty"), (1, 2, "tayassu pecari")))
    (base / "RELEASE_v2.0.txt").write_text("v2.0\n")
    return base


# (split, category, country code, timestamp)
FMOW_ROWS = (
    ("train", "airport", "USA", "2010-03-04T10:00:00Z"),        # 0 train (before 2013)
    ("test", "zoo", "FRA", "2016-05-01T09:00:00.123Z"),         # 1 OOD test
    ("test", "dam", "KEN", "2017-01-02T00:00:00Z"),             # 2 OOD test
    ("test", "park", "XXX", "2016-07-07T07:07:07Z"),            # 3 OOD test, unmapped country: "Other"
    ("val", "barn", "CHN", "2014-02-02T00:00:00Z"),             # 4 OOD val (2013-2015)
    ("val", "barn", "CHN", "2011-02-02T00:00:00Z"),             # 5 ID val
    ("test", "tower", "AUS", "2012-12-31T23:59:59Z"),           # 6 ID test
    ("seq", "port", "USA", "2017-01-01T00:00:00Z"),             # 7 sequestered: in no split
    ("test", "port", "USA", "2014-06-01T00:00:00Z"),            # 8 a test row in the OOD-val years: in no split
    ("train", "port", "USA", "2016-02-01T00:00:00Z"),           # 9 a train row after 2016: in no split
    ("test", "zoo", "BRA", "2016-09-01T00:00:00Z"),             # 10 OOD test
)
COUNTRIES = (("USA", "Americas"), ("BRA", "Americas"), ("FRA", "Europe"), ("KEN", "Africa"), ("CHN", "Asia"),
             ("AUS", "Oceania"))


def fmow(root: Path, rows: Sequence[tuple[str, str, str, str]] = FMOW_ROWS, images: bool = True) -> Path:
    """``fmow_v1.1/{rgb_metadata.csv, country_code_mapping.csv, RELEASE_v1.1.txt, images/rgb_img_<row>.png}``."""
    base = root / "fmow_v1.1"
    table = []
    for i, (split, category, country, timestamp) in enumerate(rows):
        table.append((split, f"{category}_{i}.jpg", f"{split}/{category}/{category}_{i}", category, country,
                      timestamp, 0.0))
        if images:
            write_image(base / "images" / f"rgb_img_{i}.png", color=i)
    _write_csv(base / "rgb_metadata.csv", ("split", "img_filename", "img_path", "category", "country_code",
                                           "timestamp", "cloud_cover"), table)
    _write_csv(base / "country_code_mapping.csv", ("name", "alpha-2", "alpha-3", "region"),
               ((c.lower(), c[:2], c, r) for c, r in COUNTRIES))
    (base / "RELEASE_v1.1.txt").write_text("v1.1\n")
    return base


# --------------------------------------------------------------------------------------- video robustness
def vid_robust(root: Path, anchors: Mapping[str, Sequence[int]], labels: Mapping[str, Sequence[int]],
               missing: Sequence[str] = ()) -> Path:
    """``imagenet_vid_ytbb_robust/imagenet-vid-robust/{val/<video>/<frame>.JPEG, metadata/{pmsets,labels}.json}``.

    ``anchors``: ``{"<video>/<anchor frame number>": [frame numbers of its set]}``; ``labels``: per frame key
    ``"<video>/<frame number>"`` its labels (default: those of its anchor).
    """
    base = root / "imagenet_vid_ytbb_robust" / "imagenet-vid-robust"
    key = lambda video, number: f"val/{video}/{number:06d}.JPEG"  # noqa: E731
    pmsets, label_map = {}, {}
    for anchor, frames in anchors.items():
        video, number = anchor.split("/")
        pmsets[key(video, int(number))] = [key(video, f) for f in frames]
        for f in (int(number), *frames):
            label_map[key(video, f)] = list(labels.get(f"{video}/{f}", labels[anchor]))
    for i, frame in enumerate(label_map):
        if frame not in missing:
            write_image(base / frame, color=i)
    (base / "metadata").mkdir(parents=True, exist_ok=True)
    (base / "metadata" / "pmsets.json").write_text(json.dumps(pmsets))
    (base / "metadata" / "labels.json").write_text(json.dumps(label_map))
    return base


YTBB_LABEL_NAMES = ["good", "unsure", "bad", "person", "bird", "car", "cow", "none"]
PMK_LABEL_NAMES = ["similar", "dissimilar", "correct", "bad-anchor", "blur-increase"]


def ytbb_robust(root: Path, anchors: Sequence[dict], annotations_dir: str = "ytbb-robust_metadata") -> Path:
    """``imagenet_vid_ytbb_robust/ytbb-robust/ytbb_videos/<ytid>_<ms>/frame-<i>.jpg`` plus the three annotation
    files of WiSE-FT's ``ytbb-robust_metadata/`` under ``annotations_dir``.

    Each anchor: ``{"ytid", "ms", "frame", "csv_label", "labels": [anchor label names], "pmk": {frame: [names]},
    "frames": [frame numbers on disk besides the anchor]}``.
    """
    base = root / "imagenet_vid_ytbb_robust" / "ytbb-robust"
    meta = base / annotations_dir
    anchor_rows, pmk_rows, csv_rows, color = [], [], [], 0
    for a in anchors:
        folder = f"{a['ytid']}_{a['ms']}"
        anchor_key = f"{folder}/frame-{a['frame']}.jpg"
        long_key = f"/home/ubuntu/data/ytbb/robustness_test_anchors/{anchor_key}"  # the release mixes long paths
        anchor_rows.append({"key": long_key, "notes": "",
                            "labels": [YTBB_LABEL_NAMES.index(n) for n in a["labels"]]})
        csv_rows.append((a["ytid"], a["ms"], a["csv_label"]))
        for frame, names in a.get("pmk", {}).items():
            pmk_rows.append({"key": f"{anchor_key},{folder}/frame-{frame}.jpg", "notes": "",
                             "labels": [PMK_LABEL_NAMES.index(n) for n in names]})
        for frame in (a["frame"], *a.get("frames", ())):
            color += 1
            write_image(base / "ytbb_videos" / folder / f"frame-{frame}.jpg", color=color)
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "anchor_labels.json").write_text(json.dumps({"annotations": anchor_rows, "labels": YTBB_LABEL_NAMES}))
    (meta / "pmk_labels.json").write_text(json.dumps({"annotations": pmk_rows, "labels": PMK_LABEL_NAMES}))
    _write_csv(meta / "ytbb_robustness_test_anchors_full.csv", ("ytid", "time_ms", "label"), csv_rows)
    return base


# ----------------------------------------------------------------------------------------- corruptions
def imagenet_c(root: Path, corruption: str, severities: Sequence[int], wnids: Sequence[str],
               per_class: int = 1) -> int:
    """``imagenet-c/<corruption>/<severity>/<wnid>/*.JPEG``; returns the images written per severity."""
    for severity in severities:
        for c, wnid in enumerate(wnids):
            for i in range(per_class):
                write_image(root / "imagenet-c" / corruption / str(severity) / wnid / f"ILSVRC_{i}.JPEG",
                            color=c + severity)
    return len(wnids) * per_class


def cifar10_c(root: Path, corruptions: Sequence[str], per_severity: int = 3) -> Path:
    """``CIFAR-10-C/<corruption>.npy`` ([5 * n, 32, 32, 3] uint8, severity 1 first) and ``labels.npy``."""
    base = root / "CIFAR-10-C"
    base.mkdir(parents=True, exist_ok=True)
    n = 5 * per_severity
    for c, name in enumerate(corruptions):
        images = np.zeros((n, 32, 32, 3), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(n) + 10 * c  # pixel (0, 0) tells which row it came from
        np.save(base / f"{name}.npy", images)
    np.save(base / "labels.npy", (np.arange(n) % 10).astype(np.uint8))
    return base
