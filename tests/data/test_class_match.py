"""Eval sets matched to the head's classes by name; the short form of shift folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.data_fakes import class_tree
from wiseft_lab.data.base import SelectColumns, TaskData, project_logits
from wiseft_lab.data.class_match import ClassMatchError, match_classes
from wiseft_lab.data.datasets import ArrayImages
from wiseft_lab.data.eval_sets import eval_sets

HEAD = ["circle", "square", "triangle"]


def labelled(names, labels) -> TaskData:
    return TaskData(ArrayImages(np.zeros((len(labels), 2, 2, 3), np.uint8), labels), names)


def test_same_names_pass_unchanged_and_another_order_is_renumbered():
    same = labelled(["Circle", "square", "triangle"], [0, 1, 2])   # case and _ do not make another class
    assert match_classes(same, HEAD, name="s") is same
    shuffled = match_classes(labelled(["square", "triangle", "circle"], [0, 1, 2, 2]), HEAD, name="s")
    assert list(shuffled.classnames) == HEAD
    assert shuffled.dataset.targets.tolist() == [1, 2, 0, 0]
    assert [shuffled.dataset[i][1] for i in range(4)] == [1, 2, 0, 0]


def test_renamed_classes_are_refused_with_the_names():
    with pytest.raises(ClassMatchError) as err:
        match_classes(labelled(["a square", "b circle", "c triangle"], [0, 1, 2]), HEAD, name="night")
    message = str(err.value)
    assert "'night' has classes the model's head does not know: a square, b circle, c triangle" in message
    assert "The head's classes it lacks: circle, square, triangle" in message and "`classnames` option" in message
    with pytest.raises(ClassMatchError, match="names several classes alike: Square, square"):
        match_classes(labelled(["Square", "square", "triangle"], [0]), HEAD, name="x")


def test_a_subset_is_an_error_unless_declared_partial():
    few = labelled(["triangle", "circle"], [0, 1])
    with pytest.raises(ClassMatchError, match=r"lacks classes of the model's head: square .*partial_classes=\[few\]"):
        match_classes(few, HEAD, name="few")
    matched = match_classes(few, HEAD, name="few", partial=True)
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    assert project_logits(logits, matched).tolist() == [[3.0, 1.0]]   # its own classes' columns, in its order


def test_sets_with_their_own_projection_are_left_to_it():
    data = TaskData([], ["a", "b"], projection=SelectColumns([5, 9]))
    assert match_classes(data, [str(i) for i in range(10)], name="imagenet_r") is data


def test_short_form_shift_folders(tmp_path):
    class_tree(tmp_path / "night", ["a_square", "b_circle", "c_triangle"])
    class_tree(tmp_path / "sketch" / "test", ["circle", "triangle"])    # a test/ folder inside is used
    cfg = OmegaConf.create({"shifts": {
        "sketch": str(tmp_path / "sketch"),
        "night": {"root": str(tmp_path / "night"),
                  "classnames": {"a_square": "square", "b_circle": "circle", "c_triangle": "triangle"}}},
        "partial_classes": ["sketch"]})
    sets = eval_sets(cfg)
    assert list(sets.builders) == ["sketch", "night"] and sets.partial == {"sketch"}
    night = sets.builders["night"](transform=None)
    assert list(night.classnames) == ["square", "circle", "triangle"]
    assert match_classes(night, HEAD, name="night").dataset.targets.tolist() == [1, 0, 2]
    sketch = match_classes(sets.builders["sketch"](transform=None), HEAD, name="sketch", partial=True)
    assert len(sketch.dataset) == 2 and sketch.projection.indices.tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"unknown: \['rot'\]"):
        eval_sets(OmegaConf.create({"shifts": {"x": {"root": "/d", "rot": 1}}}))
    with pytest.raises(ValueError, match="Two eval sets are named 'x'"):
        eval_sets(OmegaConf.create({"datasets": {"x": {"_target_": "builtins.dict", "_partial_": True}},
                                    "shifts": {"x": "/d"}}))
