"""ImageNet-C / CIFAR-10-C from fake releases, and corruptions generated on the fly (hand-computed where exact)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import PILToTensor

from tests import data_fakes
from tests.data import shift_fakes as fakes
from wiseft_lab.data import corruption_ops as ops
from wiseft_lab.data import corruptions as corr
from wiseft_lab.data.base import TaskData
from wiseft_lab.data.cifar import cifar10_1
from wiseft_lab.data.datasets import ArrayImages
from wiseft_lab.data.layouts import DataLayoutError, check_builder
from wiseft_lab.data.sources import synthetic_styles


def test_the_benchmark_names():
    assert len(corr.CORRUPTIONS) == 15 and len(corr.EXTRA_CORRUPTIONS) == 4
    assert corr.CORRUPTIONS[0] == "gaussian_noise" and corr.CORRUPTIONS[-1] == "jpeg_compression"
    assert set(ops.SUPPORTED) | set(ops.UNSUPPORTED) == set(corr.CORRUPTIONS + corr.EXTRA_CORRUPTIONS)
    assert set(ops.UNSUPPORTED) == {"motion_blur", "snow", "frost", "spatter"}


# ------------------------------------------------------------------------------------------- the releases
def test_imagenet_c_one_corruption_and_severity(tmp_path):
    wnids = [data_fakes.IMAGENET_WNIDS[0], data_fakes.IMAGENET_WNIDS[5]]
    fakes.imagenet_c(tmp_path, "gaussian_noise", (1, 3), wnids)
    data = corr.imagenet_c(root=str(tmp_path), corruption="gaussian_noise", severity=3)
    assert data.dataset.targets.tolist() == [0, 5] and data.num_classes == 1000
    assert all("/imagenet-c/gaussian_noise/3/" in p for p, _ in data.dataset.samples)
    assert data.extras == {"metrics": ["top1"], "corruption": "gaussian_noise", "severity": 3,
                           "root": str(tmp_path / "imagenet-c" / "gaussian_noise" / "3")}
    assert data.expected_size == 50_000
    with pytest.raises(DataLayoutError, match="corruptions present: gaussian_noise"):
        corr.imagenet_c(root=str(tmp_path), corruption="fog", severity=1)
    with pytest.raises(DataLayoutError, match="gaussian_noise/2 not found"):
        check_builder(functools.partial(corr.imagenet_c, split="test", root=str(tmp_path),
                                        corruption="gaussian_noise", severity=2))
    with pytest.raises(ValueError, match="Unknown corruption"):
        corr.imagenet_c(root=str(tmp_path), corruption="rain")
    with pytest.raises(DataLayoutError, match="imagenet-c"):
        corr.imagenet_c(root=str(tmp_path / "nowhere"))


def test_cifar10_c_rows_of_a_severity(tmp_path):
    fakes.cifar10_c(tmp_path, ["fog", "contrast"], per_severity=3)
    data = corr.cifar10_c(root=str(tmp_path), corruption="contrast", severity=2)
    # severity 2 is rows 3..5 of the stacked file; pixel (0, 0) holds the row number + 10 for "contrast"
    assert [int(data.dataset[i][0].getpixel((0, 0))[0]) for i in range(3)] == [13, 14, 15]
    assert data.dataset.targets.tolist() == [3, 4, 5] and data.classnames[0] == "airplane"
    assert data.expected_size == 10_000 and data.extras["severity"] == 2
    with pytest.raises(DataLayoutError, match="missing in .*: snow.npy"):
        corr.cifar10_c(root=str(tmp_path), corruption="snow", severity=1)
    np.save(tmp_path / "CIFAR-10-C" / "fog.npy", np.zeros((7, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DataLayoutError, match=r"expected \[5 \* n, 32, 32, 3\]"):
        corr.cifar10_c(root=str(tmp_path), corruption="fog", severity=1)


# ---------------------------------------------------------------------------------------- the operations
def test_opencv_gaussian_kernel_and_disk():
    # sigma 0.5, size 3: exp(-1/(2*0.25)) = e^-2 at +-1 -> [e^-2, 1, e^-2] / (1 + 2 e^-2)
    e2 = np.exp(-2.0)
    assert ops.opencv_gaussian_kernel(3, 0.5) == pytest.approx([e2 / (1 + 2 * e2), 1 / (1 + 2 * e2), e2 / (1 + 2 * e2)])
    kernel = ops.disk(3, 0.1)
    assert kernel.shape == (17, 17) and kernel.sum() == pytest.approx(1.0, abs=1e-6)
    assert ops.disk(10, 0.5).shape == (21, 21)   # radius > 8: a 2r+1 grid


def test_contrast_brightness_saturate_by_hand():
    rng = np.random.default_rng(0)
    img = np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    # contrast, ImageNet severity 1 (c = 0.4): mean 0.5 -> 0.5 -/+ 0.5 * 0.4 = 0.3 / 0.7 -> 76.5 / 178.5 -> 76 / 178
    out = ops.corrupt_array(img, "contrast", 1, rng, table="imagenet", release_encoding=False)
    assert out[0, :, 0].tolist() == [76, 178]
    grey = np.full((1, 1, 3), 100, dtype=np.uint8)
    # brightness, ImageNet severity 1: V = 100/255 + 0.1 -> 125.5 -> 125 (the original truncates with np.uint8)
    assert ops.corrupt_array(grey, "brightness", 1, rng, table="imagenet", release_encoding=False).tolist() == \
        [[[125, 125, 125]]]
    red = np.array([[[200, 100, 100]]], dtype=np.uint8)
    # saturate, CIFAR severity 3 (x1.5): S = 0.5 -> 0.75, hue 0, V = 200/255 -> G = B = V (1 - S) = 50
    out = ops.corrupt_array(red, "saturate", 3, rng, table="cifar", release_encoding=False)
    assert out[0, 0, 0] == 200 and abs(int(out[0, 0, 1]) - 50) <= 1 and out[0, 0, 1] == out[0, 0, 2]


def test_pixelate_averages_blocks():
    block = np.array([[0, 100], [100, 200]], dtype=np.uint8)
    img = np.repeat(np.tile(block, (2, 2))[..., None], 3, axis=2)   # 4x4, every 2x2 block averages 100
    # ImageNet severity 2 (c = 0.5): down to 2x2 (box average), back to 4x4 (box = replicate)
    out = ops.corrupt_array(img, "pixelate", 2, np.random.default_rng(0), table="imagenet", release_encoding=False)
    assert (out == 100).all()


class FixedOffsets:
    """A stand-in generator: ``integers`` returns the given (dx, dy) offsets."""

    def __init__(self, offsets):
        self.offsets = np.asarray(offsets)

    def integers(self, low, high, size):
        assert size == self.offsets.shape
        return self.offsets


def test_glass_blur_copies_pixels_as_the_release_code_does():
    # CIFAR severity 1: sigma 0.05 (no visible blur), max_delta 1, one pass; on a 4x4 image the loop visits
    # (h, w) = (3, 3), (3, 2), (2, 3), (2, 2) with these (dx, dy):
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    img[2, 2] = 255
    offsets = [(-1, -1),   # (3, 3) <- (2, 2): white
               (0, 0),     # (3, 2) <- itself
               (-1, 0),    # (2, 3) <- (2, 2): white
               (1, 1)]     # (2, 2) <- (3, 3), which is now white: stays white
    out = ops.glass_blur(img, ops.PARAMETERS["cifar"]["glass_blur"][0], FixedOffsets(offsets))
    white = {(h, w) for h in range(4) for w in range(4) if out[h, w, 0] > 127}
    # a true swap would have moved the white pixel around; the original's view assignment copies it
    assert white == {(2, 2), (2, 3), (3, 3)}


def test_generated_noise_is_deterministic_per_example_and_grows_with_severity():
    img = np.full((64, 64, 3), 128, dtype=np.uint8)
    same = [ops.corrupt_array(img, "gaussian_noise", 3, corr.example_rng(0, 7, "gaussian_noise", 3))
            for _ in range(2)]
    assert np.array_equal(*same)
    other = ops.corrupt_array(img, "gaussian_noise", 3, corr.example_rng(0, 8, "gaussian_noise", 3))
    assert not np.array_equal(same[0], other)
    spread = [np.abs(ops.corrupt_array(img, "gaussian_noise", s, corr.example_rng(0, 7, "gaussian_noise", s),
                                       release_encoding=False).astype(float) - 128).mean() for s in (1, 5)]
    # Tiny-ImageNet parameters (64 px): sigma 0.04 vs 0.18 of 255 -> mean |noise| ~ 0.8 * sigma * 255
    assert spread[0] == pytest.approx(0.798 * 0.04 * 255, rel=0.1) and spread[1] == pytest.approx(
        0.798 * 0.18 * 255, rel=0.1)


@pytest.mark.parametrize("name", ops.SUPPORTED)
def test_every_supported_corruption_runs_at_the_demo_size(name):
    img = (np.indices((64, 64)).sum(axis=0) % 256).astype(np.uint8)[..., None].repeat(3, axis=2)
    out = ops.corrupt_array(img, name, 5, np.random.default_rng(1))
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)


def test_table_follows_the_image_size():
    assert [ops.table_for(s, s) for s in (32, 45, 64, 100, 224, 500)] == \
        ["cifar", "cifar", "tiny_imagenet", "tiny_imagenet", "imagenet", "imagenet"]
    assert ops.table_for(300, 64) == "tiny_imagenet"   # the shorter side decides


def test_unsupported_and_unknown_corruptions():
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="ImageMagick"):
        ops.corrupt_array(img, "motion_blur", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="Unknown corruption"):
        ops.corrupt_array(img, "rain", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="severity"):
        ops.corrupt_array(img, "fog", 6, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------- on the fly
def test_corrupted_demo_set_is_deterministic_and_keeps_labels():
    clean = synthetic_styles("test", n_per_class=1, image_size=64)
    first, second = (corr.corrupted(clean, "fog", 3, seed=1) for _ in range(2))
    image, label = first.dataset[4]
    assert isinstance(image, Image.Image) and image.size == (64, 64) and label == clean.dataset[4][1]
    assert np.array_equal(np.asarray(image), np.asarray(second.dataset[4][0]))
    assert not np.array_equal(np.asarray(image), np.asarray(clean.dataset[4][0]))
    assert first.dataset.targets.tolist() == list(range(10))
    assert first.extras["corruption"] == "fog" and first.extras["generated"] and first.classnames == clean.classnames
    other_seed = corr.corrupted(clean, "fog", 3, seed=2).dataset[4][0]
    assert not np.array_equal(np.asarray(image), np.asarray(other_seed))


def test_corrupted_uint8_tensors_and_metrics_kept():
    images = np.full((2, 32, 32, 3), 90, dtype=np.uint8)
    # the eval transform's uint8 prefix ends in PILToTensor: [3, H, W] uint8
    source = TaskData(ArrayImages(images, [0, 1], transform=PILToTensor()), ["a", "b"],
                      extras={"metrics": ["macro_f1", "top1"]})
    data = corr.corrupted(source, "contrast", 5, transform=lambda t: t.float() / 255)
    x, y = data.dataset[1]
    # CIFAR contrast: a constant image stays at its mean: 90 -> 90 / 255 after the transform
    assert x.shape == (3, 32, 32) and y == 1 and torch.allclose(x, torch.full_like(x, 90 / 255))
    assert data.extras["metrics"] == ["macro_f1", "top1"] and data.extras["severity"] == 5
    floats = TaskData(ArrayImages(images, [0, 1], transform=lambda im: torch.zeros(3, 32, 32)), ["a", "b"])
    with pytest.raises(TypeError, match="uint8"):
        corr.corrupted(floats, "contrast", 1).dataset[0]


def test_corrupted_tensors_come_from_writable_arrays(monkeypatch):
    # the release encoding decodes through np.asarray(PIL image), which is read-only; torch.from_numpy of it warns
    # (once per process: "The given NumPy array is not writable") in every user run with generated corruptions
    from_numpy = torch.from_numpy

    def strict_from_numpy(array):
        assert array.flags.writeable, "torch.from_numpy of a read-only array"
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", strict_from_numpy)
    images = np.full((1, 32, 32, 3), 90, dtype=np.uint8)
    source = TaskData(ArrayImages(images, [0], transform=PILToTensor()), ["a"])
    for corruption in ("gaussian_noise", "jpeg_compression", "pixelate"):
        x, _ = corr.corrupted(source, corruption, 3).dataset[0]
        assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)


def test_corrupted_source_builds_and_checks_its_source(tmp_path):
    data_fakes.cifar10_1(tmp_path, n=3)
    source = functools.partial(cifar10_1, root=str(tmp_path))
    data = corr.corrupted_source("test", source=source, corruption="pixelate", severity=2)
    assert len(data.dataset) == 3 and data.dataset[0][0].size == (32, 32)
    with pytest.raises(DataLayoutError, match="CIFAR-10.1"):
        check_builder(functools.partial(corr.corrupted_source, split="test",
                                        source=functools.partial(cifar10_1, root=str(tmp_path / "none"))))


def test_mean_over_corruptions():
    # a: (0.5 + 0.3) / 2 = 0.4; b: 0.9; mean over corruptions (0.4 + 0.9) / 2 = 0.65
    means = corr.mean_over_corruptions({("a", 1): 0.5, ("a", 2): 0.3, ("b", 1): 0.9})
    assert means == pytest.approx({"a": 0.4, "b": 0.9, "mean": 0.65})
