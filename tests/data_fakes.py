"""Tiny fake copies of real data sets in their real on-disk layouts (a few 8x8 images per class)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from wiseft_lab.data.layouts import metadata


def write_image(path: Path, color: int = 0, size: tuple[int, int] = (8, 8)) -> Path:
    """A small solid image; the format follows the suffix (.png, .jpg/.jpeg/.JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = ((37 * color) % 256, (91 * color) % 256, (53 * color + 17) % 256)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", size, rgb).save(path, format=fmt)
    return path


def class_tree(directory: Path, folders: Iterable[str], per_class: int = 1, suffix: str = ".JPEG",
               size: tuple[int, int] = (8, 8)) -> int:
    """``directory/<folder>/<i><suffix>``; returns the number of images written."""
    n = 0
    for c, folder in enumerate(folders):
        for i in range(per_class):
            write_image(directory / folder / f"img_{i:03d}{suffix}", color=c + i, size=size)
            n += 1
    return n


IMAGENET_WNIDS: list[str] = metadata("imagenet")["wnids"]
R_WNIDS: list[str] = metadata("imagenet_r")["wnids"]
A_WNIDS: list[str] = metadata("imagenet_a")["wnids"]
OBJECTNET = metadata("objectnet")


VAL_CLASSES = (0, 1, 6)   # 1 and 6 are ImageNet-R classes, 6 an ImageNet-A class


def imagenet_split(root: Path, split: str = "val", wnids: Sequence[str] = tuple(IMAGENET_WNIDS[c] for c in VAL_CLASSES),
                   per_class: int = 2,
                   folder: str = "val") -> int:
    return class_tree(root / "imagenet" / folder if split == "val" else root / "imagenet" / split, wnids, per_class)


def imagenet_v2(root: Path, classes: Sequence[int] = (0, 5, 999), per_class: int = 1) -> int:
    return class_tree(root / "ImageNetV2-matched-frequency", [str(c) for c in classes], per_class, ".jpeg")


def imagenet_sketch(root: Path, wnids: Sequence[str] = IMAGENET_WNIDS[:2], per_class: int = 1) -> int:
    return class_tree(root / "sketch", wnids, per_class)


def imagenet_r(root: Path, wnids: Sequence[str] = (R_WNIDS[0], R_WNIDS[7], R_WNIDS[199]), per_class: int = 1) -> int:
    return class_tree(root / "imagenet-r", wnids, per_class, ".jpg")


def imagenet_a(root: Path, wnids: Sequence[str] = (A_WNIDS[0], A_WNIDS[199]), per_class: int = 1) -> int:
    return class_tree(root / "imagenet-a", wnids, per_class)


def objectnet(root: Path, mapped: Sequence[str] = ("alarm_clock", "chair", "banana", "wheel"),
              unmapped: Sequence[str] | None = None, per_class: int = 1, size: tuple[int, int] = (12, 10)) -> int:
    """Mapped and unmapped ObjectNet folders; returns the number of images in mapped folders."""
    unmapped = list(OBJECTNET["unmapped_folders"][:2]) if unmapped is None else list(unmapped)
    images = root / "objectnet-1.0" / "images"
    class_tree(images, unmapped, per_class, ".png", size)
    return class_tree(images, mapped, per_class, ".png", size)


def imagenet_shifts(root: Path) -> dict[str, int]:
    """Every set of ``eval=imagenet_shifts``: {set name: number of images}."""
    return {
        "imagenet": imagenet_split(root),
        "imagenet_v2": imagenet_v2(root),
        "imagenet_r": imagenet_r(root),
        "imagenet_sketch": imagenet_sketch(root),
        "objectnet": objectnet(root),
        "imagenet_a": imagenet_a(root),
    }


# ------------------------------------------------------------------------------------------------ CIFAR
def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _cifar_arrays(n: int, num_classes: int, offset: int = 0) -> tuple[np.ndarray, list[int]]:
    data = (np.arange(n * 3072, dtype=np.int64).reshape(n, 3072) + offset) % 256
    return data.astype(np.uint8), [(i + offset) % num_classes for i in range(n)]


def cifar10(root: Path, per_batch: int = 2, n_test: int = 3) -> None:
    """torchvision's cifar-10-batches-py: five train batches, a test batch, batches.meta."""
    folder = root / "cifar-10-batches-py"
    for b in range(1, 6):
        data, labels = _cifar_arrays(per_batch, 10, b)
        _pickle(folder / f"data_batch_{b}", {"data": data, "labels": labels})
    data, labels = _cifar_arrays(n_test, 10)
    _pickle(folder / "test_batch", {"data": data, "labels": labels})
    _pickle(folder / "batches.meta", {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                      "frog", "horse", "ship", "truck"]})


def cifar100(root: Path, n_train: int = 4, n_test: int = 3) -> None:
    folder = root / "cifar-100-python"
    names = [f"class_{i}" for i in range(98)] + ["aquarium_fish", "maple_tree"]
    for split, n in (("train", n_train), ("test", n_test)):
        data, labels = _cifar_arrays(n, 100, 98)
        _pickle(folder / split, {"data": data, "fine_labels": labels, "coarse_labels": [0] * n})
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["c"] * 20})


def cifar10_1(root: Path, n: int = 5, version: str = "v6") -> None:
    folder = root / "CIFAR-10.1"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"cifar10.1_{version}_data.npy", np.full((n, 32, 32, 3), 7, dtype=np.uint8))
    np.save(folder / f"cifar10.1_{version}_labels.npy", np.arange(n) % 10)


def cifar10_2(root: Path, n: int = 4) -> None:
    folder = root / "CIFAR-10.2"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "cifar102_test.npz", images=np.full((n, 32, 32, 3), 9, dtype=np.uint8),
             labels=np.arange(n) % 10)


# ------------------------------------------------------------------------------------------- transfer sets
def coop_split(directory: Path, split_file: str, image_dir: str, classes: Sequence[str],
               counts: dict[str, int]) -> None:
    """CoOp's ``split_zhou_*.json`` with ``counts[split]`` images per class, the images under ``image_dir``."""
    content = {}
    for split, count in counts.items():
        rows = []
        for label, name in enumerate(classes):
            for i in range(count):
                rel = f"{name}/{split}_{i}.jpg"
                write_image(directory / image_dir / rel, color=label)
                rows.append([rel, label, name])
        content[split] = rows
    directory.mkdir(parents=True, exist_ok=True)
    (directory / split_file).write_text(json.dumps(content))


def dtd_torchvision(root: Path, classes: Sequence[str] = ("banded", "zigzagged"), per_split: int = 2) -> None:
    base = root / "dtd" / "dtd"
    for split in ("train", "val", "test"):
        lines = []
        for c, name in enumerate(classes):
            for i in range(per_split):
                rel = f"{name}/{name}_{split}_{i}.jpg"
                write_image(base / "images" / rel, color=c)
                lines.append(rel)
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def eurosat_torchvision(root: Path, classes: Sequence[str] = ("AnnualCrop", "SeaLake"), per_class: int = 10) -> None:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / "eurosat" / "2750" / name / f"{name}_{i}.jpg", color=c)


def food101_torchvision(root: Path, classes: Sequence[str] = ("apple_pie", "ramen"), n_train: int = 5,
                        n_test: int = 2) -> None:
    base = root / "food-101"
    meta = {"train": {}, "test": {}}
    for c, name in enumerate(classes):
        for split, n in (("train", n_train), ("test", n_test)):
            meta[split][name] = [f"{name}/{split}{i}" for i in range(n)]
            for rel in meta[split][name]:
                write_image(base / "images" / f"{rel}.jpg", color=c)
    (base / "meta").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta[split]))


def fgvc_files(directory: Path, variants: Sequence[str] = ("707-320", "A340-500"), per_split: int = 1) -> None:
    """The official ``data/`` folder: images/, variants.txt, images_variant_<split>.txt."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "variants.txt").write_text("\n".join(variants) + "\n")
    number = 1000000
    for split in ("train", "val", "test", "trainval"):
        lines = []
        for c, variant in enumerate(variants):
            for _ in range(per_split):
                number += 1
                write_image(directory / "images" / f"{number}.jpg", color=c)
                lines.append(f"{number} {variant}")
        (directory / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


def pets_torchvision(root: Path, breeds: Sequence[str] = ("Abyssinian", "american_bulldog"),
                     per_split: int = 3) -> None:
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("trainval", "test"):
        lines = []
        for c, breed in enumerate(breeds):
            for i in range(per_split):
                image_id = f"{breed}_{split}{i}"
                write_image(base / "images" / f"{image_id}.jpg", color=c)
                lines.append(f"{image_id} {c + 1} {1 if breed[0].isupper() else 2} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def caltech101_torchvision(root: Path, classes: Sequence[str] = ("BACKGROUND_Google", "Faces", "Faces_easy",
                                                                  "airplanes", "yin_yang"), per_class: int = 4) -> None:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / "caltech101" / "101_ObjectCategories" / name / f"image_{i + 1:04d}.jpg", color=c)


def sun397_torchvision(root: Path, classes: Sequence[str] = ("a/abbey", "a/apartment_building/outdoor"),
                       per_class: int = 4) -> None:
    base = root / "SUN397"
    base.mkdir(parents=True, exist_ok=True)
    (base / "ClassName.txt").write_text("\n".join(f"/{c}" for c in classes) + "\n")
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(base / name / f"sun_{c}{i:03d}.jpg", color=c)
