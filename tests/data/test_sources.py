"""A researcher's own data: an image-folder tree or a CSV of path,label[,split] rows."""

from __future__ import annotations

import pytest

from tests import data_fakes as fakes
from wiseft_lab.data.layouts import DataLayoutError
from wiseft_lab.data.sources import csv_source, image_folder


def test_image_folder_names_from_folders_or_a_file(tmp_path):
    fakes.class_tree(tmp_path / "train", ["golden_retriever", "tabby_cat"], per_class=2, suffix=".png")
    data = image_folder("train", root=str(tmp_path))
    assert data.classnames == ["golden retriever", "tabby cat"] and list(data.dataset.targets) == [0, 0, 1, 1]
    (tmp_path / "names.txt").write_text("dog\ncat\n")
    assert image_folder("train", root=str(tmp_path), classnames=str(tmp_path / "names.txt")).classnames == ["dog",
                                                                                                           "cat"]
    assert image_folder("train", root=str(tmp_path), classnames=["a dog", "a cat"]).classnames == ["a dog", "a cat"]
    with pytest.raises(ValueError, match="1 class names given for 2 folders"):
        image_folder("train", root=str(tmp_path), classnames=["x"])
    with pytest.raises(DataLayoutError, match="split directory not found") as err:
        image_folder("test", root=str(tmp_path))
    assert "<class_a>" in str(err.value)


def test_csv_with_split_column_and_name_labels(tmp_path):
    for i in range(4):
        fakes.write_image(tmp_path / "imgs" / f"{i}.jpg", color=i)
    (tmp_path / "data.csv").write_text("path,label,split\nimgs/0.jpg,tabby_cat,train\nimgs/1.jpg,dog,train\n"
                                       "imgs/2.jpg,dog,test\nimgs/3.jpg,tabby_cat,test\n")
    train = csv_source("train", file=str(tmp_path / "data.csv"))
    assert train.classnames == ["dog", "tabby cat"] and train.dataset.targets.tolist() == [1, 0]
    test = csv_source("test", file=str(tmp_path / "data.csv"))
    assert test.dataset.targets.tolist() == [0, 1] and test.dataset[0][0].size == (8, 8)
    with pytest.raises(DataLayoutError, match="no rows of split 'val'"):
        csv_source("val", file=str(tmp_path / "data.csv"))


def test_csv_per_split_files_index_labels_and_image_root(tmp_path):
    images = tmp_path / "images"
    fakes.write_image(images / "a.png")
    fakes.write_image(images / "b.png")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.csv").write_text("a.png,1\nb.png,0\n")
    data = csv_source("train", file=str(tmp_path / "lists" / "{split}.csv"), image_root=str(images),
                      classnames=["cat", "dog"])
    assert data.dataset.targets.tolist() == [1, 0] and data.classnames == ["cat", "dog"]
    with pytest.raises(ValueError, match="class names"):
        csv_source("train", file=str(tmp_path / "lists" / "{split}.csv"), image_root=str(images))
    with pytest.raises(DataLayoutError, match="image not found"):
        csv_source("train", file=str(tmp_path / "lists" / "{split}.csv"), classnames=["cat", "dog"])
    with pytest.raises(DataLayoutError, match="file not found") as err:
        csv_source("test", file=str(tmp_path / "lists" / "{split}.csv"))
    assert "path,label[,split]" in str(err.value)
