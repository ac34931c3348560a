"""Few-shot and held-out splits: k per class, deterministic per seed, the same on every machine, disjoint."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from wiseft_lab.config import ConfigError
from wiseft_lab.data.base import TaskData
from wiseft_lab.data.datasets import ImageList
from wiseft_lab.data.splits import (
    LabeledSubset,
    carve,
    check_shots,
    few_shot,
    hash_order,
    holdout_from_file,
    holdout_split,
    labels_of,
    short_classes,
    train_and_holdout,
)

LABELS = np.repeat(np.arange(3), [6, 2, 5])   # classes of 6, 2 and 5 examples


def test_few_shot_takes_k_per_class_without_replacement():
    picked = few_shot(LABELS, 2, seed=0)
    assert np.bincount(LABELS[picked]).tolist() == [2, 2, 2] and len(set(picked)) == len(picked)
    everything = few_shot(LABELS, 5, seed=0)   # class 1 has only 2: all of it
    assert np.bincount(LABELS[everything]).tolist() == [5, 2, 5]
    with pytest.raises(ValueError, match="positive integer"):
        few_shot(LABELS, 0, seed=0)


def test_few_shot_is_deterministic_and_machine_stable():
    assert np.array_equal(few_shot(LABELS, 2, seed=0), few_shot(LABELS, 2, seed=0))
    assert not np.array_equal(few_shot(LABELS, 2, seed=0), few_shot(LABELS, 2, seed=1))
    # golden values: a keyed SHA-256 of (seed, index), independent of numpy/torch RNGs and of the platform
    assert few_shot(LABELS, 2, seed=0).tolist() == [2, 4, 6, 7, 8, 12]
    assert few_shot(LABELS, 2, seed=1).tolist() == [0, 5, 6, 7, 10, 12]
    assert hash_order(np.arange(5), 0, "shots").tolist() == hash_order(np.arange(5), 0, "shots").tolist()


def test_holdout_is_deterministic_disjoint_and_keeps_every_class():
    train, held = holdout_split(LABELS, 0.34, seed=0)
    assert (train.tolist(), held.tolist()) == ([0, 2, 3, 5, 6, 10, 11, 12], [1, 4, 7, 8, 9])
    assert not set(train) & set(held) and len(train) + len(held) == len(LABELS)
    single = np.array([0, 0, 0, 1])   # a class with one example keeps it for training
    train, held = holdout_split(single, 0.5, seed=0)
    assert 3 in train and set(single[train]) == {0, 1}
    assert holdout_split(LABELS, 0.0, seed=0)[1].size == 0
    with pytest.raises(ValueError):
        holdout_split(LABELS, 1.0, seed=0)


def test_carve_holds_out_first_then_takes_shots_from_the_rest(tmp_path):
    samples = [(str(tmp_path / f"{i}.png"), int(y)) for i, y in enumerate(LABELS)]
    data = TaskData(ImageList(samples), ["a", "b", "c"], description="fake")
    train, held = carve(data, holdout_fraction=0.34, shots=2, seed=3)
    train_idx, held_idx = train.dataset.indices, held.dataset.indices
    assert not set(train_idx) & set(held_idx)
    assert np.bincount(labels_of(train.dataset)).tolist() == [2, 1, 2]   # class 1 kept 1 after holding out 1
    _, held_again = carve(data, holdout_fraction=0.34, shots=4, seed=3)
    assert held_again.dataset.indices.tolist() == held_idx.tolist()   # the held-out split ignores the shots
    same, none = carve(data, seed=3)
    assert same is data and none is None


def _root_indices(dataset) -> list[int]:
    """Indices into the original data set of a (possibly nested) subset."""
    indices = np.arange(len(dataset))
    while isinstance(dataset, LabeledSubset):
        indices, dataset = dataset.indices[indices], dataset.dataset
    return indices.tolist()


def test_the_held_out_split_stays_put_while_the_training_seed_moves(tmp_path):
    """Soup ingredients (seed=range(k)) all avoid, and are all scored on, one held-out split."""
    samples = [(str(tmp_path / f"{i}.png"), int(y)) for i, y in enumerate(np.repeat(np.arange(3), 20))]
    data = TaskData(ImageList(samples), ["a", "b", "c"], description="fake")
    runs = {seed: train_and_holdout(data, 0.25, 3, seed=seed, holdout_seed=0) for seed in range(4)}
    held = {seed: tuple(h.dataset.indices.tolist()) for seed, (_, h) in runs.items()}
    assert len(set(held.values())) == 1
    trains = {seed: tuple(_root_indices(t.dataset)) for seed, (t, _) in runs.items()}
    assert len(set(trains.values())) > 1   # the k shots are drawn with each run's own seed
    for seed, (train, _) in runs.items():
        assert not set(trains[seed]) & set(held[0])
        assert np.bincount(labels_of(train.dataset)).tolist() == [3, 3, 3]


def test_a_held_out_split_named_by_a_file(tmp_path):
    samples = [(f"/data/train/c{y}/img_{i}.jpg", y) for i, y in enumerate([0, 0, 0, 1, 1, 1])]
    data = TaskData(ImageList(samples), ["a", "b"])
    mask = tmp_path / "mask.npy"
    np.save(mask, np.array([1, 0, 0, 0, 1, 0]))  # model soups' format: 1 = held out
    names = tmp_path / "names.txt"
    names.write_text("img_0.jpg\nc1/img_4.jpg\n")
    indices = tmp_path / "indices.npy"
    np.save(indices, np.array([4, 0]))
    for path in (mask, names, indices):
        assert holdout_from_file(path, data.dataset).tolist() == [0, 4]
        train, held = train_and_holdout(data, 0.0, None, seed=3, holdout_file=path)
        assert held.dataset.indices.tolist() == [0, 4] and train.dataset.indices.tolist() == [1, 2, 3, 5]
    (tmp_path / "bad.txt").write_text("img_9.jpg\n")
    with pytest.raises(ValueError, match="match no training image"):
        holdout_from_file(tmp_path / "bad.txt", data.dataset)
    with pytest.raises(ValueError, match="give one"):
        train_and_holdout(data, 0.02, None, seed=0, holdout_file=mask)


def test_shots_beyond_a_class_fail_listing_the_short_classes():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 3)
    assert short_classes(labels, 3) == {1: 2}
    with pytest.raises(ConfigError, match=r"data.shots=3: 1 of 3 classes have fewer training images: b \(2\)\."):
        check_shots(labels, 3, ["a", "b", "c"])
    check_shots(labels, 2, ["a", "b", "c"])


def test_shots_beyond_a_class_kept_on_request_are_a_warning_naming_the_short_classes(caplog):
    data = TaskData(ImageList([(f"{i}.png", y) for i, y in enumerate([0] * 5 + [1] * 2)]), ["a", "b"])
    with caplog.at_level(logging.WARNING, logger="wiseft_lab.data.splits"):
        train, _ = train_and_holdout(data, 0.0, 1000, seed=0)  # data.short_classes=keep
    assert len(train.dataset) == 7
    assert "data.shots=1000: 2 of 2 classes have fewer training images: a (5), b (2) (data.short_classes=keep" \
        in caplog.text


def test_strict_shots_count_what_the_held_out_split_leaves():
    data = TaskData(ImageList([(f"{i}.png", y) for i, y in enumerate([0] * 4 + [1] * 4)]), ["a", "b"])
    train_and_holdout(data, 0.0, 4, seed=0, strict_shots=True)
    with pytest.raises(ConfigError, match="a \\(3\\), b \\(3\\)"):
        train_and_holdout(data, 0.25, 4, seed=0, strict_shots=True)
    train, _ = train_and_holdout(data, 0.25, 4, seed=0)  # data.short_classes=keep: all that is left
    assert len(train.dataset) == 6
