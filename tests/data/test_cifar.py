"""CIFAR-10/100 in torchvision's on-disk format and the CIFAR-10.1 / 10.2 releases, on fake files."""

from __future__ import annotations

import numpy as np
import pytest

from tests import data_fakes as fakes
from wiseft_lab.data import cifar
from wiseft_lab.data.layouts import DataLayoutError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("cifar_root")
    fakes.cifar10(base)
    fakes.cifar100(base)
    fakes.cifar10_1(base)
    fakes.cifar10_2(base)
    return base


def test_cifar10_reads_torchvision_format_without_download(root):
    train, test = cifar.cifar10("train", root=str(root)), cifar.cifar10("test", root=str(root))
    assert (len(train.dataset), len(test.dataset)) == (10, 3)
    assert test.classnames == list(cifar.CIFAR10_CLASSES) and test.templates == "clip_cifar10"
    assert list(test.dataset.targets) == [0, 1, 2] and (train.expected_size, test.expected_size) == (50_000, 10_000)
    image, label = test.dataset[1]
    assert image.size == (32, 32) and label == 1


def test_cifar100_names_cleaned_or_raw(root):
    data = cifar.cifar100("test", root=str(root))
    assert data.num_classes == 100 and data.classnames[98:] == ["aquarium fish", "maple tree"]
    assert list(data.dataset.targets) == [98, 99, 0]
    assert cifar.cifar100("test", root=str(root), clean_names=False).classnames[98] == "aquarium_fish"


def test_cifar10_1_and_10_2(root):
    v6 = cifar.cifar10_1(root=str(root))
    assert len(v6.dataset) == 5 and v6.expected_size == 2_000 and v6.classnames == list(cifar.CIFAR10_CLASSES)
    assert v6.dataset.targets.tolist() == [0, 1, 2, 3, 4]
    image, label = v6.dataset[3]
    assert image.size == (32, 32) and np.asarray(image)[0, 0, 0] == 7 and label == 3
    v2 = cifar.cifar10_2(root=str(root))
    assert len(v2.dataset) == 4 and v2.expected_size == 2_000 and v2.projection is None


def test_missing_cifar_files(tmp_path, root):
    with pytest.raises(DataLayoutError, match="cifar-10-batches-py") as err:
        cifar.cifar10("test", root=str(tmp_path))
    assert "data_batch_1" in str(err.value) and "Expected layout" in str(err.value)
    with pytest.raises(DataLayoutError, match="cifar10.1_v4_data.npy"):
        cifar.cifar10_1(root=str(root), version="v4")
    with pytest.raises(DataLayoutError, match="CIFAR-10.2"):
        cifar.cifar10_2(root=str(tmp_path))
    with pytest.raises(ValueError, match="holdout_fraction"):
        cifar.cifar10("val", root=str(root))
    # torchvision's checksums, when asked for, reject the fake files with a clear message
    with pytest.raises(DataLayoutError, match="corrupted"):
        cifar.cifar10("test", root=str(root), verify_checksums=True)
