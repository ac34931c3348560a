"""CLIP transfer sets: CoOp's split files when present, torchvision's readers otherwise; names cleaned for prompts."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tests import data_fakes as fakes
from wiseft_lab.data import transfer
from wiseft_lab.data.layouts import DataLayoutError, check_builder
from wiseft_lab.models.templates import resolve_templates


def build(name, split, root, **options):
    return transfer.transfer_set(split, name=name, root=str(root), **options)


def test_coop_split_files_give_coop_examples_labels_and_names(tmp_path):
    fakes.coop_split(tmp_path / "eurosat", "split_zhou_EuroSAT.json", "2750",
                     ["Annual Crop Land", "Sea or Lake"], {"train": 3, "val": 2, "test": 1})
    fakes.coop_split(tmp_path / "caltech-101", "split_zhou_Caltech101.json", "101_ObjectCategories",
                     ["accordion", "yin_yang"], {"train": 2, "val": 1, "test": 1})
    train = build("eurosat", "train", tmp_path)
    assert train.extras["protocol"] == "coop" and len(train.dataset) == 6
    assert train.dataset.targets.tolist() == [0, 0, 0, 1, 1, 1] and train.classnames == ["Annual Crop Land",
                                                                                            "Sea or Lake"]
    assert build("eurosat", "val", tmp_path).expected_size == 5_400
    test = build("caltech101", "test", tmp_path)
    assert test.classnames == ["accordion", "yin yang"] and test.expected_size == 2_465
    assert resolve_templates(test.templates)[0] == "a photo of a {}."   # clip_caltech101
    image, label = test.dataset[1]
    assert image.size == (8, 8) and label == 1


def test_torchvision_readers_and_deterministic_splits(tmp_path):
    fakes.dtd_torchvision(tmp_path)
    fakes.eurosat_torchvision(tmp_path)
    fakes.food101_torchvision(tmp_path)
    fakes.pets_torchvision(tmp_path)
    fakes.caltech101_torchvision(tmp_path)
    fakes.sun397_torchvision(tmp_path)
    fakes.fgvc_files(tmp_path / "fgvc-aircraft-2013b" / "data")

    dtd = build("dtd", "test", tmp_path)
    assert dtd.extras["protocol"] == "torchvision" and dtd.classnames == ["banded", "zigzagged"]
    assert dtd.expected_size == 1_880 and dtd.dataset.targets.tolist() == [0, 0, 1, 1]
    assert build("fgvc_aircraft", "val", tmp_path).classnames == ["707-320", "A340-500"]

    # sets without a split: 50 / 20 / 30 per class, disjoint, the same on every call
    parts = {s: build("eurosat", s, tmp_path).dataset.samples for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [10, 4, 6]
    paths = [set(p for p, _ in parts[s]) for s in parts]
    assert len(set.union(*paths)) == 20 and not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    assert build("eurosat", "train", tmp_path).dataset.samples == parts["train"]
    assert build("eurosat", "test", tmp_path).classnames == ["Annual Crop Land", "Sea or Lake"]   # CoOp's names

    # a missing val split is carved out of train (20% per class)
    food = {s: build("food101", s, tmp_path) for s in ("train", "val", "test")}
    assert [len(food[s].dataset) for s in food] == [8, 2, 4] and food["test"].expected_size == 25_250
    assert food["train"].classnames == ["apple pie", "ramen"]
    pets = build("oxford_pets", "test", tmp_path)
    assert pets.classnames == ["abyssinian", "american bulldog"] and len(pets.dataset) == 6

    # CoOp leaves out Faces_easy (torchvision already drops BACKGROUND_Google) and renames
    caltech = build("caltech101", "train", tmp_path)
    assert caltech.classnames == ["face", "airplane", "yin yang"]
    assert set(caltech.dataset.targets.tolist()) == {0, 1, 2}
    assert not any("Faces_easy" in p for p, _ in caltech.dataset.samples)
    assert build("sun397", "test", tmp_path).classnames == ["abbey", "outdoor apartment building"]


def test_protocol_choice_and_coop_fgvc(tmp_path):
    fakes.dtd_torchvision(tmp_path)
    fakes.coop_split(tmp_path / "dtd", "split_zhou_DescribableTextures.json", "images", ["banded", "zig_zag"],
                     {"train": 1, "val": 1, "test": 1})
    assert build("dtd", "test", tmp_path).extras["protocol"] == "coop"   # auto prefers CoOp's split
    assert build("dtd", "test", tmp_path, protocol="torchvision").extras["protocol"] == "torchvision"
    fakes.fgvc_files(tmp_path / "fgvc_aircraft")   # CoOp: the official data/ folder renamed
    fgvc = build("fgvc_aircraft", "test", tmp_path)
    assert fgvc.extras["protocol"] == "coop" and fgvc.expected_size == 3_333


def test_ucf101_split_file_and_official_lists(tmp_path):
    fakes.coop_split(tmp_path / "ucf101", "split_zhou_UCF101.json", "UCF-101-midframes",
                     ["Apply_Eye_Makeup", "Yo_Yo"], {"train": 2, "val": 1, "test": 1})
    data = build("ucf101", "train", tmp_path)
    assert data.classnames == ["Apply Eye Makeup", "Yo Yo"] and data.templates == "clip_ucf101"
    other = tmp_path / "other"
    lists = other / "ucf101" / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n")
    train_lines, test_lines = [], []
    for action, folder in (("ApplyEyeMakeup", "Apply_Eye_Makeup"), ("YoYo", "Yo_Yo")):
        for i in range(5):
            fakes.write_image(other / "ucf101" / "UCF-101-midframes" / folder / f"v_{action}_g0{i}_c01.jpg")
            (train_lines if i < 4 else test_lines).append(f"{action}/v_{action}_g0{i}_c01.avi")
    (lists / "trainlist01.txt").write_text("\n".join(f"{line} 1" for line in train_lines) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(test_lines) + "\n")
    sizes = [len(build("ucf101", s, other).dataset) for s in ("train", "val", "test")]
    assert sizes == [6, 2, 2]
    assert build("ucf101", "test", other).classnames == ["Apply Eye Makeup", "Yo Yo"]


def test_missing_transfer_data_shows_both_layouts(tmp_path):
    with pytest.raises(DataLayoutError) as err:
        build("oxford_pets", "train", tmp_path)
    message = str(err.value)
    assert "split_zhou_OxfordPets.json" in message and "oxford-iiit-pet" in message and "[coop]" in message
    with pytest.raises(DataLayoutError, match=r"\[coop\]"):
        build("dtd", "train", tmp_path, protocol="coop")
    with pytest.raises(DataLayoutError):
        check_builder(functools.partial(transfer.transfer_set, split="test", name="sun397", root=str(tmp_path)))
    with pytest.raises(ValueError, match="Unknown transfer set"):
        build("mnist", "train", tmp_path)


def test_torchvision_failures_become_layout_errors(tmp_path):
    (tmp_path / "flowers-102" / "jpg").mkdir(parents=True)
    for name in ("imagelabels.mat", "setid.mat"):
        (tmp_path / "flowers-102" / name).write_bytes(b"")   # present but not the release's files
    with pytest.raises(DataLayoutError, match="torchvision could not read it"):
        build("flowers102", "test", tmp_path)
    (tmp_path / "stanford_cars" / "devkit").mkdir(parents=True)
    (tmp_path / "stanford_cars" / "devkit" / "cars_meta.mat").write_bytes(b"")
    with pytest.raises(DataLayoutError, match="torchvision could not read it"):
        build("stanford_cars", "test", tmp_path)


def test_split_per_class_rounding():
    labels = np.repeat([0, 1], [10, 3])
    train, val, test = transfer.split_per_class(labels, [0.5, 0.2], key="k")
    assert [len(train), len(val), len(test)] == [5 + 2, 2 + 1, 3 + 0]
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(13))
