"""Deterministic subsets of a training set: a held-out split and k-shot samples.

Selection uses a keyed hash of (seed, example index) rather than an RNG stream, so the same seed picks
the same examples on every machine and with every numpy/torch version. Example indices are stable because every
data source lists its files in sorted order.

* ``few_shot``: k examples per class without replacement (all of a class that has fewer).
* ``holdout_split``: per class ``round(fraction * n)`` examples (at least one, and never a class's last one) are
  held out; the held-out split does not depend on the few-shot seed and is disjoint from what is trained on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from wiseft_lab.config import ConfigError
from wiseft_lab.data.base import TaskData

log = logging.getLogger(__name__)


def labels_of(dataset: Dataset) -> np.ndarray:
    """Labels without decoding images where the dataset exposes them (``targets``/``labels``)."""
    for attr in ("targets", "labels", "_labels"):
        values = getattr(dataset, attr, None)
        if values is not None and len(values) == len(dataset):
            return np.asarray(values, dtype=np.int64)
    return np.asarray([dataset[i][1] for i in range(len(dataset))], dtype=np.int64)


def hash_order(indices: np.ndarray, seed: int, salt: str) -> np.ndarray:
    """``indices`` in a pseudo-random order that depends only on (seed, salt, index): the same everywhere."""
    indices = np.asarray(indices)
    keys = [hashlib.sha256(f"{salt}:{seed}:{int(i)}".encode()).digest()[:8] for i in indices]
    return indices[np.argsort(np.array([int.from_bytes(k, "big") for k in keys], dtype=np.uint64), kind="stable")]




def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices; per class ``round(fraction * n)`` examples are held out: at least one, but never the
    last one of a class (a class with a single example stays in training)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.holdout_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return np.arange(len(labels)), np.arange(0)
    held = []
    for label in np.unique(labels):
        members = hash_order(np.flatnonzero(labels == label), seed, "holdout")
        held.append(members[: min(len(members) - 1, max(1, round(fraction * len(members))))])
    held_out = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


def few_shot(labels: np.ndarray, shots: int, seed: int, pool: Sequence[int] | None = None) -> np.ndarray:
    """``shots`` examples per class without replacement (all of a class that has fewer), sorted."""
    if int(shots) != shots or shots <= 0:
        raise ValueError(f"data.shots must be a positive integer, got {shots}")
    shots = int(shots)
    pool = np.arange(len(labels)) if pool is None else np.asarray(pool)
    chosen = []
    for label in np.unique(labels[pool]):
        chosen.append(hash_order(pool[labels[pool] == label], seed, "shots")[:shots])
    return np.sort(np.concatenate(chosen))


def short_classes(labels: np.ndarray, shots: int, pool: Sequence[int] | None = None) -> dict[int, int]:
    """``{label: count}`` of the classes with fewer than ``shots`` examples in ``pool`` (all examples if None)."""
    pool = np.arange(len(labels)) if pool is None else np.asarray(pool)
    values, counts = np.unique(labels[pool], return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True) if c < shots}


def _short_listing(short: dict[int, int], shots: int, classnames: Sequence[str]) -> str:
    listed = ", ".join(f"{classnames[k]} ({n})" for k, n in list(short.items())[:20])
    more = f" and {len(short) - 20} more" if len(short) > 20 else ""
    return f"data.shots={shots}: {len(short)} of {len(classnames)} classes have fewer training images: {listed}{more}"


def check_shots(labels: np.ndarray, shots: int, classnames: Sequence[str], pool: Sequence[int] | None = None,
                strict: bool = True) -> None:
    """Refuse ``data.shots`` larger than a class's count (which would silently train on fewer), naming those classes;
    ``strict=False`` (``data.short_classes=keep``): say so in a warning and go on with all they have."""
    short = short_classes(labels, shots, pool)
    if short and strict:
        raise ConfigError(f"{_short_listing(short, shots, classnames)}. Lower data.shots, or set "
                          f"data.short_classes=keep to use all they have.")
    if short:
        log.warning("%s (data.short_classes=keep: training on all they have)", _short_listing(short, shots, classnames))


class LabeledSubset(Dataset):
    """``torch.utils.data.Subset`` that keeps ``targets`` so further splits need no decoding."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = labels_of(dataset)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]


def holdout_from_file(path: str | Path, dataset: Dataset) -> np.ndarray:
    """The held-out indices a file names (a fixed split, as model soups' ``imagenet_98_idxs.npy``).

    ``.npy``: a 0/1 mask over the training set in its order (model-soups ``datasets/imagenet.py``: 1 = held out, 26
    images per ImageNet class, over ``ImageFolder``'s sorted order) or an array of indices. Any other file: image
    names, one a line, each matching one sample path of the dataset by its end (``n01440764_10026.JPEG`` or
    ``n01440764/n01440764_10026.JPEG``).
    """
    path = Path(path)
    n = len(dataset)
    if path.suffix == ".npy":
        values = np.load(path, allow_pickle=False)
        if values.dtype == bool or (len(values) == n and set(np.unique(values).tolist()) <= {0, 1}):
            if len(values) != n:
                raise ValueError(f"{path}: a mask of {len(values)} entries for a training set of {n}")
            return np.flatnonzero(values.astype(bool))
        indices = np.unique(values.astype(np.int64))
        if len(indices) and (indices[0] < 0 or indices[-1] >= n):
            raise ValueError(f"{path}: indices outside 0..{n - 1}")
        return indices
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise ValueError(f"data.holdout_file={path} names images, but this dataset has no sample paths; give a .npy "
                         "mask or index array instead")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    by_suffix: dict[str, int] = {}
    for index, (sample, _) in enumerate(samples):
        parts = Path(sample).parts
        for depth in (1, 2):
            by_suffix.setdefault("/".join(parts[-depth:]), index)
    missing = [name for name in names if name not in by_suffix]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of {len(names)} names match no training image (e.g. {missing[0]})")
    return np.unique([by_suffix[name] for name in names])


def carve(data: TaskData, *, holdout_fraction: float = 0.0, shots: int | None = None, seed: int = 0,
          holdout_indices: np.ndarray | None = None, strict_shots: bool = False) -> tuple[TaskData, TaskData | None]:
    """Training and held-out :class:`TaskData`: the held-out split first (``holdout_indices`` when given, else
    ``holdout_fraction`` per class), then k shots from the rest.

    ``strict_shots``: a class with fewer than ``shots`` examples left fails (:func:`check_shots`).
    """
    labels = labels_of(data.dataset)
    if holdout_indices is not None:
        held_idx = np.asarray(holdout_indices, dtype=np.int64)
        train_idx = np.setdiff1d(np.arange(len(labels)), held_idx)
    else:
        train_idx, held_idx = holdout_split(labels, holdout_fraction, seed)
    if shots:
        check_shots(labels, shots, data.classnames, pool=train_idx, strict=strict_shots)
        train_idx = few_shot(labels, shots, seed, pool=train_idx)

    def subset(indices: np.ndarray, tag: str) -> TaskData:
        return TaskData(LabeledSubset(data.dataset, indices), data.classnames, data.templates, data.projection,
                        None, f"{data.description} [{tag}: {len(indices)}]", data.extras)

    if holdout_fraction or shots or holdout_indices is not None:
        log.info("%s: training on %d of %d examples%s%s", data.description or "data", len(train_idx), len(labels),
                 f", {shots} shots per class (seed {seed})" if shots else "",
                 f", {len(held_idx)} held out ({holdout_fraction:g} per class)" if len(held_idx) else "")
    train = data if (holdout_fraction == 0.0 and not shots and holdout_indices is None) else subset(train_idx, "train")
    return train, (subset(held_idx, "held-out") if len(held_idx) else None)


def train_and_holdout(data: TaskData, holdout_fraction: float, shots: int | None, *, seed: int,
                      holdout_seed: int = 0, holdout_file: str | Path | None = None,
                      strict_shots: bool = False) -> tuple[TaskData, TaskData | None]:
    """A run's training set and held-out split: the held-out split by ``holdout_seed`` (or named by
    ``holdout_file``, :func:`holdout_from_file`), k shots by ``seed``.

    The held-out split must not move with the training seed: every ingredient of a soup sweep (``seed=range(k)``)
    keeps its hands off the same examples, and the soup run scores on exactly those.
    """
    indices = None
    if holdout_file:
        if holdout_fraction:
            raise ValueError(f"data.holdout_file={holdout_file} and data.holdout_fraction={holdout_fraction}: give one")
        indices = holdout_from_file(holdout_file, data.dataset)
    train, held = carve(data, holdout_fraction=holdout_fraction, shots=shots if seed == holdout_seed else None,
                        seed=holdout_seed, holdout_indices=indices, strict_shots=strict_shots)
    if shots and seed != holdout_seed:  # k shots of the rest, drawn with the training seed
        train = carve(train, shots=shots, seed=seed, strict_shots=strict_shots)[0]
    return train, held
