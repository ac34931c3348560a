"""CIFAR-10 / CIFAR-100 (torchvision's on-disk format, never downloaded) and the CIFAR-10.1 / 10.2 test sets.

A second, smaller reference/shift family: ``eval=cifar10_shifts`` scores CIFAR-10 test (reference), CIFAR-10.1
and CIFAR-10.2 with one 10-way head (same classes, no projection).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.datasets import ArrayImages
from wiseft_lab.data.layouts import (
    DataLayoutError,
    find_dir,
    find_file,
    layout_error,
    with_layout_check,
)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SIZES = {"train": 50_000, "test": 10_000}
CIFAR10_1_SIZES = {"v6": 2_000, "v4": 2_021}  # the two releases of modestyachts/CIFAR-10.1 (v6 recommended)
CIFAR10_2_SIZES = {"test": 2_000, "train": 10_000}  # modestyachts/cifar-10.2

LAYOUT_CIFAR10 = """\
<data_root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   (torchvision's format: the
    extracted cifar-10-python.tar.gz)"""
LAYOUT_CIFAR100 = """\
<data_root>/cifar-100-python/{train, test, meta}   (torchvision's format: the extracted cifar-100-python.tar.gz)"""
LAYOUT_CIFAR10_1 = """\
<data_root>/CIFAR-10.1/cifar10.1_v6_data.npy and cifar10.1_v6_labels.npy   (the files of the release's
    datasets/ folder; v4: cifar10.1_v4_*.npy. Also accepted: cifar10.1/, cifar-10.1/, CIFAR-10.1/datasets/)"""
LAYOUT_CIFAR10_2 = """\
<data_root>/CIFAR-10.2/cifar102_test.npz (and cifar102_train.npz), arrays `images` [N,32,32,3] uint8 and
    `labels`   (the .npz release; also accepted: cifar10.2/, cifar-10.2/)"""


class _LocalCIFAR(CIFAR10):
    """torchvision's reader without the download step; files must exist (checksums only when asked)."""

    def __init__(self, root: str, train: bool, transform: Callable | None = None, verify_checksums: bool = False):
        self.verify_checksums = verify_checksums
        super().__init__(root, train=train, transform=transform, download=False)

    def _check_integrity(self) -> bool:
        if self.verify_checksums:
            return super()._check_integrity()
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, name))
                   for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        if self.verify_checksums:
            return super()._load_meta()
        # the same as torchvision's, without the md5 check
        import pickle

        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class LocalCIFAR10(_LocalCIFAR):
    pass


class LocalCIFAR100(_LocalCIFAR):
    base_folder = CIFAR100.base_folder
    url, filename, tgz_md5 = CIFAR100.url, CIFAR100.filename, CIFAR100.tgz_md5
    train_list, test_list, meta = CIFAR100.train_list, CIFAR100.test_list, CIFAR100.meta


def _clean(names: Sequence[str], clean: bool) -> list[str]:
    return [n.replace("_", " ") if clean else n for n in names]


def _cifar_files(kind: type[_LocalCIFAR], title: str, layout: str, split: str, root, path) -> Path:
    if split not in SIZES:
        raise ValueError(f"{title} has splits 'train' and 'test', not {split!r} (data.holdout_fraction carves a "
                         "validation split out of train)")
    if path is not None:
        base = Path(path).expanduser()
    elif root is not None:
        base = Path(root).expanduser()
    else:
        raise layout_error(title, "no data root given", layout)
    folder = base / kind.base_folder
    needed = [name for name, _ in kind.train_list + kind.test_list] + [kind.meta["filename"]]
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise layout_error(title, f"missing in {folder.resolve()}: {', '.join(missing)}", layout)
    return base


def _cifar(kind: type[_LocalCIFAR], title: str, layout: str, split: str, transform, root, path, templates,
           clean_names: bool, verify_checksums: bool) -> TaskData:
    base = _cifar_files(kind, title, layout, split, root, path)
    try:
        dataset = kind(str(base), train=split == "train", transform=transform, verify_checksums=verify_checksums)
    except RuntimeError as err:  # torchvision: "not found or corrupted" (checksums)
        raise layout_error(title, f"{base / kind.base_folder}: {err}", layout) from err
    return TaskData(dataset, _clean(dataset.classes, clean_names), templates, expected_size=SIZES[split],
                    description=f"{title} {split} ({base / kind.base_folder})")


def _check_cifar(kind, title, layout):
    def check(split: str = "test", *, root=None, path=None, **_) -> None:
        _cifar_files(kind, title, layout, split, root, path)
    return check


@with_layout_check(_check_cifar(LocalCIFAR10, "CIFAR-10", LAYOUT_CIFAR10))
def cifar10(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
            path: str | None = None, templates: str | Sequence[str] = "clip_cifar10", clean_names: bool = True,
            verify_checksums: bool = False) -> TaskData:
    """CIFAR-10 ``train`` (50,000) / ``test`` (10,000) from ``<root>/cifar-10-batches-py`` (``path``: that root)."""
    return _cifar(LocalCIFAR10, "CIFAR-10", LAYOUT_CIFAR10, split, transform, root, path, templates, clean_names,
                  verify_checksums)


@with_layout_check(_check_cifar(LocalCIFAR100, "CIFAR-100", LAYOUT_CIFAR100))
def cifar100(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
             path: str | None = None, templates: str | Sequence[str] = "clip_cifar100", clean_names: bool = True,
             verify_checksums: bool = False) -> TaskData:
    """CIFAR-100 (fine labels) from ``<root>/cifar-100-python``.

    ``clean_names`` turns ``aquarium_fish`` into ``aquarium fish`` (CLIP's names); WiSE-FT's code uses torchvision's
    raw names, which ``clean_names=false`` reproduces.
    """
    return _cifar(LocalCIFAR100, "CIFAR-100", LAYOUT_CIFAR100, split, transform, root, path, templates,
                  clean_names, verify_checksums)


# ------------------------------------------------------------------------------------------ CIFAR-10.1 / 10.2
CIFAR10_1_DIRS = ("CIFAR-10.1", "cifar10.1", "cifar-10.1", "CIFAR-10.1/datasets")
CIFAR10_2_DIRS = ("CIFAR-10.2", "cifar10.2", "cifar-10.2")


def _cifar10_1_files(split: str, version: str, root, path) -> tuple[Path, Path]:
    if split not in ("test", "val"):
        raise ValueError(f"CIFAR-10.1 is a test set only (split 'test'), not {split!r}")
    if version not in CIFAR10_1_SIZES:
        raise ValueError(f"CIFAR-10.1 version must be one of {sorted(CIFAR10_1_SIZES)}, not {version!r}")
    directory = find_dir(root, CIFAR10_1_DIRS, title="CIFAR-10.1", layout=LAYOUT_CIFAR10_1, path=path)
    data, labels = (find_file(directory, [f"cifar10.1_{version}_{k}.npy", f"datasets/cifar10.1_{version}_{k}.npy"])
                    for k in ("data", "labels"))
    if data is None or labels is None:
        raise layout_error("CIFAR-10.1", f"cifar10.1_{version}_data.npy / _labels.npy not found in {directory}",
                           LAYOUT_CIFAR10_1)
    return data, labels


def _check_cifar10_1(split: str = "test", *, root=None, path=None, version: str = "v6", **_) -> None:
    _cifar10_1_files(split, version, root, path)


@with_layout_check(_check_cifar10_1)
def cifar10_1(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
              path: str | None = None, version: str = "v6",
              templates: str | Sequence[str] = "clip_cifar10") -> TaskData:
    """CIFAR-10.1 (``v6``: 2,000 images, the recommended release; ``v4``: 2,021), CIFAR-10's classes."""
    data, labels = _cifar10_1_files(split, version, root, path)
    images = np.load(data, allow_pickle=False)
    dataset = ArrayImages(images, np.load(labels, allow_pickle=False).astype(np.int64), transform)
    return TaskData(dataset, list(CIFAR10_CLASSES), templates, expected_size=CIFAR10_1_SIZES[version],
                    description=f"CIFAR-10.1 {version} ({data.parent})")


def _cifar10_2_file(split: str, root, path) -> Path:
    if split not in CIFAR10_2_SIZES:
        raise ValueError(f"CIFAR-10.2 has splits 'train' and 'test', not {split!r}")
    directory = find_dir(root, CIFAR10_2_DIRS, title="CIFAR-10.2", layout=LAYOUT_CIFAR10_2, path=path)
    found = find_file(directory, [f"cifar102_{split}.npz"])
    if found is None:
        hint = (" (found the older pickled .npy release: convert it with np.savez(..., images=d['images'], "
                "labels=d['labels']))") if (directory / f"cifar102_{split}.npy").is_file() else ""
        raise layout_error("CIFAR-10.2", f"cifar102_{split}.npz not found in {directory}{hint}", LAYOUT_CIFAR10_2)
    return found


def _check_cifar10_2(split: str = "test", *, root=None, path=None, **_) -> None:
    _cifar10_2_file(split, root, path)


@with_layout_check(_check_cifar10_2)
def cifar10_2(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
              path: str | None = None, templates: str | Sequence[str] = "clip_cifar10") -> TaskData:
    """CIFAR-10.2 from the ``.npz`` release (``test``: 2,000 images; ``train``: 10,000), CIFAR-10's classes."""
    file = _cifar10_2_file(split, root, path)
    with np.load(file, allow_pickle=False) as arrays:
        if "images" not in arrays or "labels" not in arrays:
            raise DataLayoutError(f"CIFAR-10.2: {file} has arrays {sorted(arrays)}, expected 'images' and 'labels'")
        images, labels = arrays["images"], arrays["labels"].reshape(-1).astype(np.int64)
    return TaskData(ArrayImages(images, labels, transform), list(CIFAR10_CLASSES), templates,
                    expected_size=CIFAR10_2_SIZES[split], description=f"CIFAR-10.2 {split} ({file})")
