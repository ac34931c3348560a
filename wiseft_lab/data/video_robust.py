"""ImageNet-Vid-Robust and YTBB-Robust (Shankar et al., ICCV 2021): anchor frames and their neighbours, scored by pm-k.

An anchor counts as correct under pm-k only if it and every reviewed frame within k frames of it are classified
correctly; pm-0 is the accuracy on the anchors alone. A 1000-way ImageNet head is scored through the max of the
ImageNet logits of each class (``merge_op='max'`` in WiSE-FT and imagenet-testbed).

* ImageNet-Vid-Robust: 30 classes; the frame sets and per-frame labels (several per frame allowed) are the
  release's ``metadata/pmsets.json`` and ``metadata/labels.json`` (1,109 anchors, 22,179 frames, ``k = 10``).
  Semantics of mlfoundations/wise-ft ``src/datasets/imagenet_vid_robust.py`` (``ImageNetVidRobust``) and
  modestyachts/imagenet-vid-robust-example ``score_predictions.py``.
* YTBB-Robust: the reviewed annotations of WiSE-FT ``src/datasets/ytbb-robust_metadata/`` (anchor_labels.json,
  pmk_labels.json, ytbb_robustness_test_anchors_full.csv), which this package does not ship; semantics of
  WiSE-FT ``src/datasets/ytbb_robust.py`` (``YtbbPmkDataset``, ``create_pmk_score``): anchors marked good (not
  bad/unsure) and not flagged ``bad-anchor``; labels = the annotated class names plus the CSV's label (with its
  22 <-> 23 swap); neighbours = offsets -k..k whose pair is marked similar and none of the problem labels. Every
  frame of an anchor's set is judged against the anchor's labels. 23 classes: the official index's "none" is left
  out, since the official projection pushes its logit down by 1e10 (see ``metadata/video_robust.json``).

``TaskData.extras``: ``metrics`` (``["pm<k>", "pm0"]``), ``pmk_sets`` (one int array per anchor: its dataset index,
then its neighbours'), ``pmk_k``, ``label_sets`` (the labels that count per example); ``targets`` holds one of
them (WiSE-FT's first / smallest) for code that needs a single label.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from wiseft_lab.data.base import MaxOverGroups, TaskData
from wiseft_lab.data.datasets import ImageList
from wiseft_lab.data.layouts import find_dir, layout_error, metadata, with_layout_check

log = logging.getLogger(__name__)

TEMPLATES = "openai_imagenet"  # WiSE-FT scores both sets with its ImageNet head (ImageNet's 80 prompts)
MAX_K = 10  # the released frame sets hold the frames within 10 of each anchor

LAYOUT_VID = """\
<data_root>/imagenet_vid_ytbb_robust/imagenet-vid-robust/val/ILSVRC2015_val_00000000/000442.JPEG
<data_root>/imagenet_vid_ytbb_robust/imagenet-vid-robust/metadata/{pmsets.json, labels.json}
    (the extracted imagenet_vid_ytbb_robust.tar.gz; also accepted: <data_root>/imagenet-vid-robust/, where
    WiSE-FT's datasets.md moves it)"""
LAYOUT_YTBB = """\
<data_root>/imagenet_vid_ytbb_robust/ytbb-robust/ytbb_videos/<youtube id>_<anchor ms>/frame-<index>.jpg
<ytbb-robust>/ytbb-robust_metadata/{anchor_labels.json, pmk_labels.json, ytbb_robustness_test_anchors_full.csv}
    (the reviewed annotations: copy mlfoundations/wise-ft src/datasets/ytbb-robust_metadata/ there, or pass
    annotations=<dir>; also looked for in <ytbb-robust>/metadata/. Also accepted: <data_root>/ytbb-robust/)"""

VID_DIRS = ("imagenet_vid_ytbb_robust/imagenet-vid-robust", "imagenet-vid-robust")
YTBB_DIRS = ("imagenet_vid_ytbb_robust/ytbb-robust", "ytbb-robust")
YTBB_ANNOTATION_DIRS = ("ytbb-robust_metadata", "metadata")
YTBB_FILES = ("anchor_labels.json", "pmk_labels.json", "ytbb_robustness_test_anchors_full.csv")
# WiSE-FT load_pmk_annotations: a neighbour counts only when marked similar and none of these
PMK_PROBLEMS = ("dissimilar", "problematic", "incorrect", "dont know", "deformation", "background-change",
                "occlusion-increased", "blur-increase", "bad-anchor")


class MaxOverGroupsWithFill:
    """``MaxOverGroups`` for the classes with ImageNet classes, a constant logit for those without any."""

    def __init__(self, groups: Sequence[Sequence[int]], fill: float):
        self.mapped = [i for i, g in enumerate(groups) if len(g)]
        self.inner = MaxOverGroups([groups[i] for i in self.mapped])
        self.width, self.fill = len(groups), float(fill)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        out = logits.new_full((*logits.shape[:-1], self.width), self.fill)
        out[..., self.mapped] = self.inner(logits)
        return out


def _k(k: int) -> int:
    if int(k) != k or not 0 <= k <= MAX_K:
        raise ValueError(f"k must be an integer in 0..{MAX_K} (the released frame sets span +-{MAX_K}), not {k}")
    return int(k)


def _test_only(split: str, title: str) -> None:
    if split not in ("test", "val"):
        raise ValueError(f"{title} is a test set only (split 'test'), not {split!r}")


def _load_json(file: Path, title: str, layout: str):
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise layout_error(title, f"cannot read {file}: {err}", layout) from err


def _names(names: Sequence[str], clean: bool) -> list[str]:
    return [n.replace("_", " ") if clean else n for n in names]


def _frame_sets(anchors: Sequence[tuple[Path, list[Path]]], title: str, layout: str):
    """Keep the anchors whose frames are all on disk (warn about the others); dataset order: anchor, then its set.

    Returns (paths, pmk_sets); an anchor with a missing neighbour is dropped whole, never scored on fewer frames.
    """
    paths, sets, dropped = [], [], []
    for anchor, frames in anchors:
        members = [anchor, *frames]
        missing = [p for p in members if not p.is_file()]
        if missing:
            dropped.append(missing[0])
            continue
        sets.append(np.arange(len(paths), len(paths) + len(members), dtype=np.int64))
        paths.extend(members)
    if not sets:
        raise layout_error(title, f"none of the {len(anchors)} anchors has its frames on disk (e.g. "
                                  f"{dropped[0] if dropped else 'no anchors listed'})", layout)
    if dropped:
        log.warning("%s: %d of %d anchors are left out because frames are missing (e.g. %s); the copy is "
                    "incomplete.", title, len(dropped), len(anchors), dropped[0])
    return paths, sets


# ------------------------------------------------------------------------------------------ ImageNet-Vid-Robust
@functools.cache
def vid_classes() -> tuple[dict, ...]:
    """The 30 ImageNet-VID classes in label order: ``{wnid, name, imagenet_indices}``."""
    return tuple(metadata("video_robust")["imagenet_vid_robust"]["classes"])


def _vid_dir(split: str, root, path) -> Path:
    _test_only(split, "ImageNet-Vid-Robust")
    directory = find_dir(root, VID_DIRS, title="ImageNet-Vid-Robust", layout=LAYOUT_VID, path=path)
    missing = [n for n in ("val", "metadata/pmsets.json", "metadata/labels.json") if not (directory / n).exists()]
    if missing:
        raise layout_error("ImageNet-Vid-Robust", f"missing in {directory}: {', '.join(missing)}", LAYOUT_VID)
    return directory


def check_imagenet_vid_robust(split: str = "test", *, root=None, path=None, **_) -> None:
    _vid_dir(split, root, path)


def _frame_number(key: str) -> int:
    return int(Path(key).stem)


@with_layout_check(check_imagenet_vid_robust)
def imagenet_vid_robust(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
                        path: str | None = None, k: int = MAX_K, templates: str | Sequence[str] = TEMPLATES,
                        clean_names: bool = True) -> TaskData:
    """ImageNet-Vid-Robust: each anchor with the frames of its released set within ``k`` frames of it.

    ``k=10`` is the released benchmark (WiSE-FT's ``pm10``). ``clean_names=false`` keeps WiSE-FT's names
    (``domestic_cat``).
    """
    k = _k(k)
    directory = _vid_dir(split, root, path)
    pmsets = _load_json(directory / "metadata" / "pmsets.json", "ImageNet-Vid-Robust", LAYOUT_VID)
    label_map = _load_json(directory / "metadata" / "labels.json", "ImageNet-Vid-Robust", LAYOUT_VID)
    anchors = []
    for anchor in sorted(pmsets):
        near = [f for f in pmsets[anchor] if abs(_frame_number(f) - _frame_number(anchor)) <= k]
        anchors.append((directory / anchor, [directory / f for f in near]))
    paths, sets = _frame_sets(anchors, "ImageNet-Vid-Robust", LAYOUT_VID)
    keys = [p.relative_to(directory).as_posix() for p in paths]
    unlabelled = [key for key in keys if not label_map.get(key)]
    if unlabelled:
        raise layout_error("ImageNet-Vid-Robust", f"{len(unlabelled)} frames have no labels in metadata/labels.json "
                                                  f"(e.g. {unlabelled[0]})", LAYOUT_VID)
    label_sets = [np.asarray(label_map[key], dtype=np.int64) for key in keys]
    # one label per example for code that needs one: WiSE-FT's label_map[key][0]
    samples = [(str(p), int(labels[0])) for p, labels in zip(paths, label_sets, strict=True)]
    classes = vid_classes()
    info = metadata("video_robust")["imagenet_vid_robust"]
    return TaskData(
        ImageList(samples, transform), _names([c["name"] for c in classes], clean_names), templates,
        projection=MaxOverGroups([c["imagenet_indices"] for c in classes]),
        expected_size=info["frames"] if k == MAX_K else None,
        description=f"ImageNet-Vid-Robust pm-{k} ({directory})",
        extras={"root": str(directory), "metrics": [f"pm{k}", "pm0"] if k else ["pm0"], "pmk_sets": sets,
                "pmk_k": k, "label_sets": label_sets, "anchors_official": info["anchors"]},
    )


# ------------------------------------------------------------------------------------------------ YTBB-Robust
@functools.cache
def ytbb_classes() -> tuple[dict, ...]:
    """The 23 predictable YTBB classes in label order: ``{ytbb_index, name, imagenet_indices}``."""
    return tuple(metadata("video_robust")["ytbb_robust"]["classes"])


def _ytbb_dirs(split: str, root, path, annotations) -> tuple[Path, Path]:
    _test_only(split, "YTBB-Robust")
    directory = find_dir(root, YTBB_DIRS, title="YTBB-Robust", layout=LAYOUT_YTBB, path=path)
    if not (directory / "ytbb_videos").is_dir():
        raise layout_error("YTBB-Robust", f"missing in {directory}: ytbb_videos/", LAYOUT_YTBB)
    candidates = [Path(annotations).expanduser()] if annotations is not None else \
        [directory / d for d in YTBB_ANNOTATION_DIRS]
    for folder in candidates:
        if all((folder / f).is_file() for f in YTBB_FILES):
            return directory, folder
    looked = ", ".join(str(c) for c in candidates)
    raise layout_error("YTBB-Robust", f"the annotation files {', '.join(YTBB_FILES)} were not found in: {looked}",
                       LAYOUT_YTBB)


def check_ytbb_robust(split: str = "test", *, root=None, path=None, annotations=None, **_) -> None:
    _ytbb_dirs(split, root, path, annotations)


def _short_key(path: str) -> str:
    """WiSE-FT ``path_to_key``: ``<folder>/<file>`` of a (possibly absolute) frame path."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def _latest_annotations(file: Path) -> tuple[dict[str, dict], list[str]]:
    """WiSE-FT ``load_labels``: the annotations by key (the last one of a key wins) and the label names."""
    content = _load_json(file, "YTBB-Robust", LAYOUT_YTBB)
    return {row["key"]: row for row in content["annotations"]}, list(content["labels"])


def _has(row: dict, names: list[str], wanted: Sequence[str]) -> set[str]:
    return {names[i] for i in row["labels"]} & set(wanted)


def ytbb_anchor_sets(folder: Path, k: int) -> dict[str, tuple[set[int], list[str]]]:
    """``{anchor key: (official YTBB label indices, neighbour keys by offset -k..k)}`` of the reviewed anchors.

    As WiSE-FT's ``YtbbPmkDataset(...).get_anchor_labels(reviewed=True)`` and ``get_pmk(k, reviewed=True)``.
    """
    anchors, anchor_names = _latest_annotations(folder / "anchor_labels.json")
    pairs, pair_names = _latest_annotations(folder / "pmk_labels.json")
    good = {}
    for row in anchors.values():
        present = _has(row, anchor_names, ("good", "bad", "unsure"))
        if present == {"good"}:
            good[_short_key(row["key"])] = row
    bad_anchors = {_short_key(row["key"].split(",")[0]) for row in pairs.values()
                   if _has(row, pair_names, ("bad-anchor",))}
    valid_pairs = {row["key"] for row in pairs.values()
                   if _has(row, pair_names, ("similar",)) and not _has(row, pair_names, PMK_PROBLEMS)
                   and _short_key(row["key"].split(",")[0]) not in bad_anchors}
    ytbb_index = {c["name"]: c["ytbb_index"] for c in ytbb_classes()} | {"none": metadata("video_robust")[
        "ytbb_robust"]["none_index"]}
    swap = {int(a): b for a, b in metadata("video_robust")["ytbb_robust"]["csv_label_swap"].items()}
    with open(folder / "ytbb_robustness_test_anchors_full.csv", newline="", encoding="utf-8") as f:
        initial = {f"{r['ytid']}_{r['time_ms']}": swap.get(int(r["label"]), int(r["label"])) for r in csv.DictReader(f)}
    result = {}
    for key in sorted(set(good) - bad_anchors):
        folder_name, frame = key.split("/")
        if folder_name not in initial:
            raise layout_error("YTBB-Robust", f"anchor {key} is not in ytbb_robustness_test_anchors_full.csv",
                               LAYOUT_YTBB)
        labels = {ytbb_index[anchor_names[i]] for i in good[key]["labels"] if anchor_names[i] in ytbb_index}
        index = int(frame.split("-")[1].split(".")[0])
        # WiSE-FT get_pmk compares the annotation's key string itself with "<anchor key>,<neighbour key>"
        near = [f"{folder_name}/frame-{index + o}.jpg" for o in range(-k, k + 1) if o != 0]
        result[key] = (labels | {initial[folder_name]}, [n for n in near if f"{key},{n}" in valid_pairs])
    return result


@with_layout_check(check_ytbb_robust)
def ytbb_robust(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
                path: str | None = None, annotations: str | None = None, k: int = MAX_K,
                unmapped_logit: float = 0.0, templates: str | Sequence[str] = TEMPLATES,
                clean_names: bool = True) -> TaskData:
    """YTBB-Robust: the reviewed anchors and their similar neighbours within ``k`` frames (WiSE-FT: ``pm10``).

    ``unmapped_logit``: the logit of the classes no ImageNet class maps to (cow, giraffe, skateboard, toilet)
    under a 1000-way head: 0 as WiSE-FT (its zero-initialised projection), ``-inf`` as imagenet-testbed; the two
    differ only when every mapped logit of an image is below it.
    """
    k = _k(k)
    directory, folder = _ytbb_dirs(split, root, path, annotations)
    anchor_sets = ytbb_anchor_sets(folder, k)
    videos = directory / "ytbb_videos"
    anchors = [(videos / key, [videos / n for n in near]) for key, (_, near) in anchor_sets.items()]
    paths, sets = _frame_sets(anchors, "YTBB-Robust", LAYOUT_YTBB)
    position = {c["ytbb_index"]: i for i, c in enumerate(ytbb_classes())}  # "none" is not a class here
    by_anchor = {str(videos / key): [position[y] for y in sorted(labels) if y in position]
                 for key, (labels, _) in anchor_sets.items()}
    label_sets = []
    for s in sets:
        labels = np.asarray(by_anchor[str(paths[s[0]])], dtype=np.int64)
        label_sets.extend([labels] * len(s))
    # an anchor labelled "none" only could never be right (the release has none such); its targets entry is -1
    samples = [(str(p), int(labels[0]) if len(labels) else -1) for p, labels in zip(paths, label_sets, strict=True)]
    classes = ytbb_classes()
    return TaskData(
        ImageList(samples, transform), _names([c["name"] for c in classes], clean_names), templates,
        projection=MaxOverGroupsWithFill([c["imagenet_indices"] for c in classes], unmapped_logit),
        description=f"YTBB-Robust pm-{k} ({directory}, annotations {folder})",
        extras={"root": str(directory), "metrics": [f"pm{k}", "pm0"] if k else ["pm0"], "pmk_sets": sets,
                "pmk_k": k, "label_sets": label_sets},
    )

