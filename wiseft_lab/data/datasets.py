"""Image datasets that expose their labels as ``targets`` (so splits never decode an image), and transforms
applied on top of an untransformed dataset (a training set is built once and seen through several transforms)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.splits import LabeledSubset, labels_of
from wiseft_lab.errors import UserFacingError


class CorruptImageError(UserFacingError, OSError):
    """An image file that cannot be decoded (truncated, not an image); the message names the file."""


def pil_open(path: str, mode: str | None = "RGB") -> Image.Image:
    """torchvision's ``pil_loader`` (decode, convert to RGB); ``mode=None`` keeps the file's own mode.

    A file PIL cannot decode fails naming itself (PIL's own errors do not say which file)."""
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            if mode is None:
                image.load()
                return image
            return image.convert(mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"{path}: cannot be decoded ({err}). Replace or delete the file, or skip unreadable "
                                f"images with data.skip_corrupt=true.") from err


def readable_subset(data: TaskData, threads: int = 8) -> tuple[TaskData, list[str]]:
    """``data`` without the examples whose image cannot be decoded, and why each was dropped.

    Every image is decoded once (``threads`` at a time: PIL releases the GIL while decoding), so the splits and
    shots are drawn from the readable examples and training never meets a bad file.
    """
    def problem(index: int) -> str | None:
        try:
            data.dataset[index]
        except CorruptImageError as err:
            return str(err)
        return None

    with ThreadPoolExecutor(threads) as pool:
        problems = list(pool.map(problem, range(len(data.dataset))))
    bad = [message for message in problems if message]
    if not bad:
        return data, []
    keep = [index for index, message in enumerate(problems) if message is None]
    return dataclasses.replace(data, dataset=LabeledSubset(data.dataset, keep)), bad


class ImageList(Dataset):
    """``(path, label)`` samples decoded with PIL; exposes ``targets`` so splits never decode images.

    ``pre_transform`` runs on the PIL image before ``transform`` (ObjectNet's optional border crop). ``mode``: the
    PIL mode images are converted to on loading (``None``: as stored, like ``imagenetv2_pytorch``).
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable | None = None,
                 pre_transform: Callable | None = None, mode: str | None = "RGB"):
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.targets = np.asarray([y for _, y in self.samples], dtype=np.int64)
        self.transform = transform
        self.pre_transform = pre_transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = pil_open(path, self.mode)
        if self.pre_transform is not None:
            image = self.pre_transform(image)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


class ArrayImages(Dataset):
    """Images held in a uint8 ``[N, H, W, 3]`` array (CIFAR-10.1 / 10.2), with ``targets``."""

    def __init__(self, images: np.ndarray, labels: Iterable[int], transform: Callable | None = None):
        self.images = images
        self.targets = np.asarray(list(labels), dtype=np.int64)
        if len(self.images) != len(self.targets):
            raise ValueError(f"{len(self.images)} images but {len(self.targets)} labels")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(np.asarray(self.images[index], dtype=np.uint8))
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


class TransformedDataset(Dataset):
    """``transform(image)`` on top of a dataset that yields untransformed images; keeps ``targets``."""

    def __init__(self, dataset: Dataset, transform: Callable):
        self.dataset = dataset
        self.transform = transform

    @functools.cached_property
    def targets(self) -> np.ndarray:
        return labels_of(self.dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


def with_transform(data: TaskData, transform: Callable | None) -> TaskData:
    """``data`` seen through ``transform`` (``data`` must yield untransformed images): builds nothing again."""
    if transform is None:
        return data
    return dataclasses.replace(data, dataset=TransformedDataset(data.dataset, transform))
