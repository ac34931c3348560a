"""ImageNet-C and CIFAR-10-C from their release layouts, and the same corruptions generated for any set.

* ``imagenet_c``: ``<root>/imagenet-c/<corruption>/<severity>/<wnid>/*.JPEG`` (Hendrycks & Dietterich, ICLR 2019;
  the 15 corruptions of the benchmark and, from the separate extra tarball, the 4 held-out ones), 50,000 images
  per corruption and severity, ImageNet's 1000 classes.
* ``cifar10_c``: ``<root>/CIFAR-10-C/<corruption>.npy`` (``[50000, 32, 32, 3]`` uint8: the 10,000 test images at
  severity 1, then 2, ..., 5, as ``make_cifar_c.py`` stacks them) and ``labels.npy``.
* ``corrupted(data, corruption, severity, seed)``: any set with a corruption applied per example, deterministically
  (the random draws depend only on seed, example index, corruption and severity); the parameters are the
  release's whose image size is nearest the image's (224: ImageNet-C, 64: Tiny-ImageNet-C, the demo's size,
  32: CIFAR-10-C) and the result is stored as that release stored it (see :mod:`wiseft_lab.data.corruption_ops`,
  which also lists the four corruptions that cannot be generated here).

Each set is one (corruption, severity) pair; a suite reports every pair, the mean per corruption over the five
severities and the mean over corruptions (:func:`mean_over_corruptions`). Scored by top-1
(``extras["metrics"] = ["top1"]``); ``extras["corruption"]``, ``extras["severity"]`` name the pair.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.cifar import CIFAR10_CLASSES
from wiseft_lab.data.corruption_ops import CORRUPTIONS, EXTRA_CORRUPTIONS, check_corruption, corrupt_array
from wiseft_lab.data.datasets import ArrayImages, ImageList
from wiseft_lab.data.imagenet import TEMPLATES as IMAGENET_TEMPLATES
from wiseft_lab.data.imagenet import imagenet_classnames, imagenet_wnids
from wiseft_lab.data.layouts import (
    class_folders,
    find_dir,
    layout_error,
    scan_class_folders,
    with_layout_check,
)
from wiseft_lab.data.splits import labels_of

SEVERITIES = (1, 2, 3, 4, 5)
IMAGENET_C_SIZE = 50_000
CIFAR10_C_SIZE = 10_000

LAYOUT_IMAGENET_C = """\
<data_root>/imagenet-c/gaussian_noise/3/n01440764/ILSVRC2012_val_00000293.JPEG   (one folder per corruption,
    then per severity 1..5, then the 1000 wnid folders: the extracted blur/digital/noise/weather tarballs,
    and extra.tar for speckle_noise, gaussian_blur, spatter, saturate. Also accepted: ImageNet-C/)"""
LAYOUT_CIFAR10_C = """\
<data_root>/CIFAR-10-C/gaussian_noise.npy   ([50000, 32, 32, 3] uint8: severities 1..5, 10,000 images each)
<data_root>/CIFAR-10-C/labels.npy   (the extracted CIFAR-10-C.tar; also accepted: cifar-10-c/, CIFAR10-C/)"""


def _check_pair(corruption: str, severity: int) -> None:
    if corruption not in CORRUPTIONS + EXTRA_CORRUPTIONS:
        raise ValueError(f"Unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS + EXTRA_CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, not {severity!r}")


def _test_only(split: str, title: str) -> None:
    if split not in ("test", "val"):
        raise ValueError(f"{title} is a test set only (split 'test'), not {split!r}")


def _extras(corruption: str, severity: int, **more) -> dict:
    return {"metrics": ["top1"], "corruption": corruption, "severity": int(severity), **more}


# ---------------------------------------------------------------------------------------------- ImageNet-C
@functools.cache
def _wnid_positions() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


def _imagenet_c_dir(split: str, corruption: str, severity: int, root, path) -> Path:
    _test_only(split, "ImageNet-C")
    _check_pair(corruption, severity)
    base = find_dir(root, ("imagenet-c", "ImageNet-C"), title="ImageNet-C", layout=LAYOUT_IMAGENET_C, path=path)
    directory = base / corruption / str(severity)
    if not directory.is_dir():
        present = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise layout_error("ImageNet-C", f"{directory} not found (corruptions present: "
                                         f"{', '.join(present) or 'none'})", LAYOUT_IMAGENET_C)
    return directory


def check_imagenet_c(split: str = "test", *, root=None, path=None, corruption: str = "gaussian_noise",
                     severity: int = 1, **_) -> None:
    directory = _imagenet_c_dir(split, corruption, severity, root, path)
    class_folders(directory, _wnid_positions(), title="ImageNet-C", layout=LAYOUT_IMAGENET_C)


@with_layout_check(check_imagenet_c)
def imagenet_c(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
               path: str | None = None, corruption: str = "gaussian_noise", severity: int = 1,
               templates: str | Sequence[str] = IMAGENET_TEMPLATES) -> TaskData:
    """One (corruption, severity) of ImageNet-C: 50,000 images, labels as ImageNet's (sorted wnids)."""
    directory = _imagenet_c_dir(split, corruption, severity, root, path)
    samples = scan_class_folders(directory, _wnid_positions(), title="ImageNet-C", layout=LAYOUT_IMAGENET_C,
                                 expected=1000)
    return TaskData(ImageList(samples, transform), list(imagenet_classnames()), templates,
                    expected_size=IMAGENET_C_SIZE, description=f"ImageNet-C {corruption} {severity} ({directory})",
                    extras=_extras(corruption, severity, root=str(directory)))


# --------------------------------------------------------------------------------------------- CIFAR-10-C
def _cifar10_c_files(split: str, corruption: str, severity: int, root, path) -> tuple[Path, Path]:
    _test_only(split, "CIFAR-10-C")
    _check_pair(corruption, severity)
    directory = find_dir(root, ("CIFAR-10-C", "cifar-10-c", "CIFAR10-C"), title="CIFAR-10-C",
                         layout=LAYOUT_CIFAR10_C, path=path)
    images, labels = directory / f"{corruption}.npy", directory / "labels.npy"
    missing = [p.name for p in (images, labels) if not p.is_file()]
    if missing:
        raise layout_error("CIFAR-10-C", f"missing in {directory}: {', '.join(missing)}", LAYOUT_CIFAR10_C)
    return images, labels


def check_cifar10_c(split: str = "test", *, root=None, path=None, corruption: str = "gaussian_noise",
                    severity: int = 1, **_) -> None:
    _cifar10_c_files(split, corruption, severity, root, path)


@with_layout_check(check_cifar10_c)
def cifar10_c(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
              path: str | None = None, corruption: str = "gaussian_noise", severity: int = 1,
              templates: str | Sequence[str] = "clip_cifar10") -> TaskData:
    """One (corruption, severity) of CIFAR-10-C: the rows ``(severity - 1) * n .. severity * n`` (n = 10,000)."""
    images_file, labels_file = _cifar10_c_files(split, corruption, severity, root, path)
    images = np.load(images_file, mmap_mode="r", allow_pickle=False)
    labels = np.load(labels_file, allow_pickle=False).reshape(-1)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or len(images) != len(labels) or len(images) % 5:
        raise layout_error("CIFAR-10-C", f"{images_file} is {images.shape} with {len(labels)} labels; expected "
                                         "[5 * n, 32, 32, 3] and 5 * n labels", LAYOUT_CIFAR10_C)
    n = len(images) // 5
    rows = slice((severity - 1) * n, severity * n)
    return TaskData(ArrayImages(images[rows], labels[rows].astype(np.int64), transform), list(CIFAR10_CLASSES),
                    templates, expected_size=CIFAR10_C_SIZE,
                    description=f"CIFAR-10-C {corruption} {severity} ({images_file})",
                    extras=_extras(corruption, severity, root=str(images_file.parent)))


# ------------------------------------------------------------------------------------------ on the fly
def example_rng(seed: int, index: int, corruption: str, severity: int) -> np.random.Generator:
    """The generator of one example's corruption: a function of (seed, index, corruption, severity) only."""
    digest = hashlib.sha256(f"corruption:{seed}:{index}:{corruption}:{severity}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def _to_array(image) -> tuple[np.ndarray, str]:
    """An HWC uint8 RGB array of a PIL image, a CHW uint8 tensor (the eval prefix's output) or an HWC array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")), "pil"
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise TypeError("corrupted() needs uint8 images (PIL, or a [C, H, W] uint8 tensor as the eval transform's "
                            f"uint8 prefix gives), not a {image.dtype} tensor of shape {tuple(image.shape)}: apply "
                            "the normalisation after the corruption")
        array = image.permute(1, 2, 0).numpy()
        return (np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array), "tensor"
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"corrupted() needs uint8 images, not {array.dtype}")
    return (np.stack([array] * 3, axis=-1) if array.ndim == 2 else array), "array"


def _from_array(array: np.ndarray, kind: str):
    if kind == "pil":
        return Image.fromarray(array)
    if kind == "tensor":
        # the release encoding decodes through np.asarray(PIL image), a read-only view: torch.from_numpy would warn
        return torch.from_numpy(np.require(array, requirements=("C", "W"))).permute(2, 0, 1).contiguous()
    return array


class CorruptedImages(Dataset):
    """``dataset`` with ``corruption`` at ``severity`` applied to every image, then ``transform``; same labels."""

    def __init__(self, dataset: Dataset, corruption: str, severity: int, seed: int = 0, *,
                 table: str | None = None, release_encoding: bool = True, transform: Callable | None = None):
        check_corruption(corruption, severity)
        self.dataset, self.corruption, self.severity, self.seed = dataset, corruption, int(severity), int(seed)
        self.table, self.release_encoding, self.transform = table, release_encoding, transform

    @functools.cached_property
    def targets(self) -> np.ndarray:
        """The wrapped set's labels (read when first asked for: a set without ``targets`` is decoded for them)."""
        return labels_of(self.dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        array, kind = _to_array(image)
        rng = example_rng(self.seed, index, self.corruption, self.severity)
        out = _from_array(corrupt_array(array, self.corruption, self.severity, rng, table=self.table,
                                        release_encoding=self.release_encoding), kind)
        return (self.transform(out) if self.transform is not None else out), label


def corrupted(data: TaskData, corruption: str, severity: int, seed: int = 0, *, table: str | None = None,
              release_encoding: bool = True, transform: Callable | None = None) -> TaskData:
    """``data`` with ``corruption`` at ``severity`` generated per example (same classes, labels, projection, metrics).

    The images ``data`` yields (PIL, or uint8 tensors from the eval transform's uint8 prefix, i.e. after resizing
    and cropping, as ImageNet-C was made from resized, centre-cropped images) are corrupted, then ``transform``
    (if any) is applied. ``table``: ``imagenet``, ``tiny_imagenet`` or ``cifar`` parameters (default: by size).
    """
    dataset = CorruptedImages(data.dataset, corruption, severity, seed, table=table,
                              release_encoding=release_encoding, transform=transform)
    return TaskData(dataset, data.classnames, data.templates, data.projection, expected_size=data.expected_size,
                    description=f"{data.description} + {corruption} {severity} (generated, seed {seed})",
                    extras={**data.extras, "corruption": corruption, "severity": int(severity), "generated": True,
                            "seed": int(seed)})


def corrupted_source(split: str = "test", transform: Callable | None = None, *, source: Callable[..., TaskData],
                     corruption: str = "gaussian_noise", severity: int = 1, seed: int = 0,
                     table: str | None = None, release_encoding: bool = True) -> TaskData:
    """Builder form of :func:`corrupted` for configs: ``source`` (a partial builder) is built with ``transform``
    (the suite's uint8 prefix) and its images corrupted; its layout check runs through ``check_builder``."""
    return corrupted(source(split=split, transform=transform), corruption, severity, seed, table=table,
                     release_encoding=release_encoding)


def mean_over_corruptions(results: Mapping[tuple[str, int], float]) -> dict[str, float]:
    """``{corruption: mean over its severities, ..., "mean": mean of those}`` from ``{(corruption, severity): v}``.

    The benchmark's mean is over the 15 corruptions (the extra 4 are held out): pass only those to reproduce it.
    """
    by_corruption: dict[str, list[float]] = {}
    for (corruption, _), value in results.items():
        by_corruption.setdefault(corruption, []).append(float(value))
    means = {c: float(np.mean(v)) for c, v in by_corruption.items()}
    if means:
        means["mean"] = float(np.mean(list(means.values())))
    return means
