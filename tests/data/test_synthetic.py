"""The procedural demo benchmark: deterministic, split-disjoint, labelled without rendering."""

from __future__ import annotations

import numpy as np
import pytest

from wiseft_lab.data import synthetic
from wiseft_lab.data.splits import labels_of


@pytest.mark.parametrize("style", synthetic.STYLES)
def test_every_style_renders_deterministically(style):
    first = synthetic.SyntheticShapes(style, "test", 1, seed=3)
    again = synthetic.SyntheticShapes(style, "test", 1, seed=3)
    for index in range(len(first)):
        image, label = first[index]
        assert image.size == (64, 64) and image.mode == "RGB" and label == index % 10
        assert np.array_equal(np.asarray(image), np.asarray(again[index][0]))


def test_splits_and_seeds_draw_different_images():
    def pixels(split: str, seed: int) -> np.ndarray:
        return np.asarray(synthetic.SyntheticShapes("photo", split, 1, seed=seed)[4][0])

    assert not np.array_equal(pixels("train", 0), pixels("test", 0))
    assert not np.array_equal(pixels("test", 0), pixels("test", 1))


def test_targets_are_the_labels_items_carry():
    data = synthetic.SyntheticShapes("sketch", "train", 3)
    assert labels_of(data).tolist() == [data[i][1] for i in range(len(data))]


def test_captions_name_the_class_and_head_prompts_are_among_them():
    captions = {synthetic.caption(7, "photo", synthetic.sample_rng(0, "photo", "pretrain", i)) for i in range(200)}
    assert all("moon" in c for c in captions)
    assert "a photo of a moon." in captions


def test_bad_arguments_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="photo"):
        synthetic.SyntheticShapes("oil", "test", 1)
    with pytest.raises(ValueError, match="pretrain"):
        synthetic.SyntheticShapes("photo", "val", 1)
