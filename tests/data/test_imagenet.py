"""ImageNet and its shifts on tiny fake trees in the real layouts: labels, projections, exclusions, errors."""

from __future__ import annotations

import logging

import pytest
import torch

from tests import data_fakes as fakes
from wiseft_lab.data import imagenet as inet
from wiseft_lab.data.base import project_logits
from wiseft_lab.data.layouts import DataLayoutError, check_builder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("imagenet_root")
    fakes.imagenet_shifts(base)
    fakes.imagenet_split(base, "train", fakes.IMAGENET_WNIDS[998:], per_class=1)
    return base


def test_imagenet_labels_follow_sorted_wnids(root):
    val = inet.imagenet("val", root=str(root))
    assert val.num_classes == 1000 and val.classnames[0] == "tench"
    assert val.dataset.targets.tolist() == [0, 0, 1, 1, 6, 6] and val.expected_size == 50_000
    assert inet.imagenet("test", root=str(root)).dataset.samples == val.dataset.samples   # test = val
    train = inet.imagenet("train", root=str(root))
    assert train.dataset.targets.tolist() == [998, 999] and train.expected_size == 1_281_167
    image, label = val.dataset[2]
    assert image.size == (8, 8) and image.mode == "RGB" and label == 1


def test_imagenet_val_in_folder_and_coop_layouts(tmp_path):
    fakes.class_tree(tmp_path / "imagenet" / "images" / "val", fakes.IMAGENET_WNIDS[5:6])
    assert inet.imagenet("val", root=str(tmp_path)).dataset.targets.tolist() == [5]   # CoOp's imagenet/images/val
    fakes.class_tree(tmp_path / "imagenet" / "val_in_folder", fakes.IMAGENET_WNIDS[7:8])
    assert inet.imagenet("val", root=str(tmp_path)).dataset.targets.tolist() == [7]   # WiSE-FT's name wins


def test_imagenet_v2_labels_are_folder_numbers(root):
    v2 = inet.imagenet_v2(root=str(root))
    assert sorted(v2.dataset.targets.tolist()) == [0, 5, 999] and v2.num_classes == 1000
    assert v2.projection is None and v2.expected_size == 10_000


def test_imagenet_v2_opens_images_as_stored_like_imagenetv2_pytorch(tmp_path, tiny_bundle):
    from PIL import Image

    path = tmp_path / "ImageNetV2-matched-frequency" / "3" / "gray.jpeg"
    path.parent.mkdir(parents=True)
    Image.new("L", (8, 8), 120).save(path)
    assert inet.imagenet_v2(root=str(tmp_path)).dataset[0][0].mode == "L"   # converted by the model's transform
    image, label = inet.imagenet_v2(root=str(tmp_path), transform=tiny_bundle.preprocess_val).dataset[0]
    assert image.shape == (3, 32, 32) and label == 3


def test_sketch(root):
    sketch = inet.imagenet_sketch(root=str(root))
    assert sketch.dataset.targets.tolist() == [0, 1] and sketch.expected_size == 50_889


@pytest.mark.parametrize("which", ["imagenet_r", "imagenet_a"])
def test_r_and_a_select_their_200_columns(root, which):
    data = getattr(inet, which)(root=str(root))
    indices = inet.subset_indices(which)
    assert data.num_classes == 200 and data.classnames[0] == inet.imagenet_classnames()[indices[0]]
    # labels are positions in the 200 sorted wnids, whatever folders this copy has
    expected = {"imagenet_r": [0, 7, 199], "imagenet_a": [0, 199]}[which]
    assert data.dataset.targets.tolist() == expected
    logits = torch.arange(2000, dtype=torch.float32).reshape(2, 1000)
    projected = project_logits(logits, data)
    assert projected.shape == (2, 200)
    assert torch.equal(projected, logits[:, indices])   # the official columns, in order, not renormalised
    own_head = torch.randn(3, 200)
    assert project_logits(own_head, data) is own_head   # a head built for the 200 classes: no projection


def test_objectnet_keeps_mapped_folders_and_maxes_over_groups(root):
    data = inet.objectnet(root=str(root))
    folders = [c["folder"] for c in inet.objectnet_classes()]
    assert data.num_classes == 113 and len(data.dataset) == 4   # the two unmapped folders are left out
    assert all("/objectnet-1.0/images/" in p for p, _ in data.dataset.samples)
    assert {p.split("/")[-2] for p, _ in data.dataset.samples} == {"alarm_clock", "banana", "chair", "wheel"}
    assert data.dataset.targets.tolist() == [folders.index(f) for f in ("alarm_clock", "banana", "chair", "wheel")]
    assert data.classnames[folders.index("alarm_clock")] == "alarm clock"
    # hand-built logits: alarm_clock = max(analog clock 409, digital clock 530); chair = max over 3 chairs
    logits = torch.zeros(2, 1000)
    logits[0, 409], logits[0, 530] = 1.0, 5.0
    logits[1, 409], logits[1, 530] = 7.0, -2.0
    logits[0, 423], logits[0, 559], logits[0, 765] = 3.0, 9.0, 4.0
    projected = project_logits(logits, data)
    assert projected.shape == (2, 113)
    assert projected[:, folders.index("alarm_clock")].tolist() == [5.0, 7.0]
    assert projected[0, folders.index("chair")].item() == 9.0
    banana = folders.index("banana")
    logits[1, 954] = 11.0
    assert project_logits(logits, data)[1].argmax().item() == banana


def test_objectnet_border_crop_is_an_explicit_option(root):
    assert inet.objectnet(root=str(root)).dataset[0][0].size == (12, 10)   # default: as the published numbers
    cropped = inet.objectnet(root=str(root), border_crop=True)
    assert cropped.dataset[0][0].size == (8, 6) and cropped.extras["border_crop"]


@pytest.mark.parametrize("which", ["imagenet_r", "imagenet_a"])
def test_val_classes_variants(root, which):
    data = getattr(inet, f"{which}_val_classes")(root=str(root))
    indices = inet.subset_indices(which)
    kept = [c for c in fakes.VAL_CLASSES if c in indices]   # the fake val has classes 0, 1, 6
    assert kept == {"imagenet_r": [1, 6], "imagenet_a": [6]}[which]
    assert data.dataset.targets.tolist() == [indices.index(c) for c in kept for _ in range(2)]
    assert data.num_classes == 200 and data.expected_size == 10_000
    logits = torch.randn(4, 1000)
    assert torch.equal(project_logits(logits, data), logits[:, indices])


def test_missing_data_names_the_path_and_the_layout(tmp_path):
    with pytest.raises(DataLayoutError) as err:
        inet.imagenet_r(root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert str((tmp_path / "nowhere" / "imagenet-r").resolve()) in message
    assert "does not exist" in message and "Expected layout" in message and "n01443537" in message
    assert "paths.data_root" in message and "WISEFT_DATA_ROOT" in message
    with pytest.raises(DataLayoutError, match="objectnet-1.0/images"):
        inet.objectnet(root=str(tmp_path))
    with pytest.raises(DataLayoutError, match="directory not found"):
        inet.imagenet_v2(path=str(tmp_path / "v2"))


def test_wrong_layouts_fail_clearly(tmp_path):
    fakes.write_image(tmp_path / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG")   # the flat raw tarball
    with pytest.raises(DataLayoutError, match="images directly instead of one folder per class"):
        inet.imagenet("val", root=str(tmp_path))
    fakes.class_tree(tmp_path / "imagenet-a", ["n01498041", "cats"])
    with pytest.raises(DataLayoutError, match="not classes of this data set: cats"):
        inet.imagenet_a(root=str(tmp_path))
    fakes.class_tree(tmp_path / "imagenet-r", [fakes.IMAGENET_WNIDS[0]])   # tench is not an ImageNet-R class
    with pytest.raises(DataLayoutError, match="not classes of this data set: n01440764"):
        inet.imagenet_r(root=str(tmp_path))
    with pytest.raises(ValueError, match="test set only"):
        inet.imagenet_sketch("train", root=str(tmp_path))


def test_layout_checks_run_without_listing_images(root, tmp_path):
    import functools

    check_builder(functools.partial(inet.objectnet, split="test", root=str(root)))
    with pytest.raises(DataLayoutError, match="ImageNet-Sketch"):
        check_builder(functools.partial(inet.imagenet_sketch, split="test", root=str(tmp_path)))


def test_incomplete_copies_are_logged(root, caplog):
    with caplog.at_level(logging.WARNING):
        inet.imagenet_r(root=str(root))
    assert "only 3 of its 200 class folders" in caplog.text
