"""WILDS iWildCam and FMoW on tiny fake trees in the layout the wilds package downloads."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data import shift_fakes as fakes
from wiseft_lab.data import wilds
from wiseft_lab.data.layouts import DataLayoutError, check_builder
from wiseft_lab.evaluation.set_metrics import score_set
from wiseft_lab.models.templates import fill_template, resolve_templates, template_text


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("wilds_root")
    fakes.iwildcam(base)
    fakes.fmow(base)
    return base


def test_iwildcam_splits_labels_and_locations(root):
    test = wilds.iwildcam("test", root=str(root))
    # the rows of split "test" in file order: 2, 3, 7
    assert [Path(p).name for p, _ in test.dataset.samples] == ["0002cafe.jpg", "0003cafe.jpg", "0007cafe.jpg"]
    assert all("/iwildcam_v2.0/train/" in p for p, _ in test.dataset.samples)   # every split lives in train/
    assert test.dataset.targets.tolist() == [3, 181, 3]
    assert test.extras["groups"]["location"].tolist() == [2, 3, 2]
    assert test.extras["group_names"]["location"] == ["0", "1", "2", "3", "4"]   # max(location_remapped) + 1
    assert test.extras["metrics"] == ["macro_f1", "top1"] and test.extras["split"] == "test"
    assert test.num_classes == 182 and test.classnames[0] == "empty"
    assert test.classnames[1] == "white-lipped peccary"   # WiSE-FT: the English name, lower-cased
    assert test.expected_size == 42_791
    assert wilds.iwildcam("id_test", root=str(root)).dataset.targets.tolist() == [5]
    assert wilds.iwildcam("val", root=str(root)).expected_size == 14_961
    image, label = test.dataset[1]
    assert image.size == (8, 8) and image.mode == "RGB" and label == 181


def test_iwildcam_prompts_are_wise_ft_s(root):
    data = wilds.iwildcam(root=str(root))
    assert data.templates == "wilds_iwildcam"
    prompts = [fill_template(t, "puma") for t in resolve_templates(data.templates)]
    assert prompts == ["a photo of puma.", "puma in the wild."]


def test_fmow_time_split_regions_and_years(root):
    test = wilds.fmow("test", root=str(root))
    # OOD test = split "test" from 2016 on: rows 1, 2, 3, 10 (row 6 is 2012: id_test; row 8 is 2014: no split)
    assert [Path(p).name for p, _ in test.dataset.samples] == ["rgb_img_1.png", "rgb_img_2.png", "rgb_img_3.png",
                                                               "rgb_img_10.png"]
    categories = [c.replace(" ", "_") for c in test.classnames]
    assert test.dataset.targets.tolist() == [categories.index(c) for c in ("zoo", "dam", "park", "zoo")]
    assert test.extras["group_names"]["region"] == ["Africa", "Americas", "Asia", "Europe", "Oceania"]
    # FRA Europe, KEN Africa, XXX unmapped ("Other": in no region), BRA Americas
    assert test.extras["groups"]["region"].tolist() == [3, 0, -1, 1]
    assert test.extras["groups"]["year"].tolist() == [14, 15, 14, 14]   # 2016, 2017, 2016, 2016 - 2002
    assert test.extras["metrics"][0] == "worst_region_acc" and test.expected_size == 22_108
    rows = {split: [Path(p).name for p, _ in wilds.fmow(split, root=str(root)).dataset.samples]
            for split in ("train", "val", "id_val", "id_test")}
    # row 9 (train, 2016) and 7 (seq) are in no split
    assert rows == {"train": ["rgb_img_0.png"], "val": ["rgb_img_4.png"], "id_val": ["rgb_img_5.png"],
                    "id_test": ["rgb_img_6.png"]}


def test_fmow_worst_region_leaves_other_out(root):
    test = wilds.fmow("test", root=str(root))
    labels = torch.as_tensor(test.dataset.targets)
    logits = torch.zeros(4, 62)
    logits[torch.arange(4), labels] = 1.0
    logits[2, labels[2]] = -1.0   # only the "Other" example is wrong
    # regions Europe, Africa, Americas all 1/1; "Other" is not a region -> worst 1.0 while top-1 is 3/4
    scores = score_set(logits, labels, test)
    assert scores["worst_region_acc"] == 1.0 and scores["top1"] == 0.75
    logits[1, labels[1]] = -1.0   # now Africa's one example is wrong too -> worst 0.0
    assert score_set(logits, labels, test)["worst_region_acc"] == 0.0


def test_fmow_split_boundaries():
    utc = timezone.utc
    assert wilds.fmow_split_of("test", datetime(2016, 1, 1, tzinfo=utc)) == "test"
    assert wilds.fmow_split_of("test", datetime(2015, 12, 31, 23, 59, tzinfo=utc)) is None   # OOD-val years
    assert wilds.fmow_split_of("val", datetime(2013, 1, 1, tzinfo=utc)) == "val"
    assert wilds.fmow_split_of("val", datetime(2012, 12, 31, tzinfo=utc)) == "id_val"
    assert wilds.fmow_split_of("train", datetime(2013, 1, 1, tzinfo=utc)) is None
    assert wilds.fmow_split_of("seq", datetime(2005, 1, 1, tzinfo=utc)) is None


def test_fmow_prompts_and_names(root):
    raw = wilds.fmow(root=str(root), clean_names=False)
    assert raw.classnames[1] == "airport_hangar" and len(raw.classnames) == 62
    assert wilds.fmow(root=str(root)).classnames[1] == "airport hangar"
    templates = resolve_templates(raw.templates)
    prompts = [fill_template(t, "airport_hangar") for t in templates]
    assert len(prompts) == 16
    # WiSE-FT: "{}" is the name as given; append_proper_article replaces "_" and picks a/an by the first letter
    assert prompts[:4] == ["satellite photo of a airport_hangar.", "aerial photo of a airport_hangar.",
                           "satellite photo of an airport hangar.", "aerial photo of an airport hangar."]
    assert prompts[-2:] == ["a photo of a airport_hangar.", "airport_hangar."]
    assert fill_template(templates[2], "zoo") == "satellite photo of a zoo."
    assert template_text(templates[2]) == "satellite photo of {article}."  # what a checkpoint records: lossless


def test_missing_and_wrong_layouts(tmp_path):
    with pytest.raises(DataLayoutError) as err:
        wilds.iwildcam(root=str(tmp_path))
    message = str(err.value)
    assert str((tmp_path / "iwildcam_v2.0").resolve()) in message and "Expected layout" in message
    assert 'wilds.get_dataset("iwildcam"' in message and "WISEFT_DATA_ROOT" in message
    fakes.iwildcam(tmp_path, images=False)
    with pytest.raises(DataLayoutError, match="missing in .*: train"):
        wilds.iwildcam(root=str(tmp_path))
    fakes.fmow(tmp_path, images=False)
    (tmp_path / "fmow_v1.1" / "images").mkdir()
    with pytest.raises(DataLayoutError, match="image not found: .*rgb_img_1.png"):
        wilds.fmow(root=str(tmp_path))
    (tmp_path / "fmow_v1.1" / "country_code_mapping.csv").write_text("code,area\nUSA,Americas\n")
    with pytest.raises(DataLayoutError, match="no column.* alpha-3, region"):
        wilds.fmow(root=str(tmp_path))
    with pytest.raises(ValueError, match="id_test"):
        wilds.fmow("ood_test", root=str(tmp_path))


def test_layout_checks_do_not_read_the_tables(root, tmp_path):
    check_builder(functools.partial(wilds.iwildcam, split="test", root=str(root)))
    check_builder(functools.partial(wilds.fmow, split="id_test", root=str(root)))
    with pytest.raises(DataLayoutError, match="FMoW"):
        check_builder(functools.partial(wilds.fmow, split="test", root=str(tmp_path)))
    header_only = tmp_path / "iwildcam_v2.0"
    (header_only / "train").mkdir(parents=True)
    (header_only / "metadata.csv").write_text("split,filename,y\n")
    with pytest.raises(DataLayoutError, match="location_remapped"):
        check_builder(functools.partial(wilds.iwildcam, split="test", root=str(tmp_path)))


def test_group_arrays_are_int64(root):
    groups = wilds.fmow(root=str(root)).extras["groups"]
    assert all(g.dtype == np.int64 for g in groups.values())
