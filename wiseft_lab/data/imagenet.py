"""ImageNet and its five distribution shifts, with the evaluation semantics of the official WiSE-FT / soups code.

* ImageNet: ``train``/``val`` as one folder per WordNet id; class index = position in the sorted 1000 wnids.
* ImageNet-V2 (matched frequency): folders ``0``..``999`` named by class index.
* ImageNet-Sketch: 1000 wnid folders.
* ImageNet-R / ImageNet-A: 200 wnid folders; labels 0..199 in sorted-wnid order; a 1000-way head is scored on
  the 200 corresponding columns (no renormalisation).
* ObjectNet: the 113 classes that map to ImageNet (class index = position in the sorted mapped folder names);
  images of unmapped folders are left out; the logit of an ObjectNet class is the max of its ImageNet logits.
* ``*_val_classes``: ImageNet val restricted to the IN-R / IN-A classes (relabelled 0..199, same columns).

Labels come from the shipped class lists (``metadata/*.json``), not from the folders found, so an incomplete copy
never shifts labels; it only triggers the size warning of the evaluation suite.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

from wiseft_lab.data.base import MaxOverGroups, SelectColumns, TaskData
from wiseft_lab.data.datasets import ImageList
from wiseft_lab.data.layouts import (
    class_folders,
    find_dir,
    metadata,
    scan_class_folders,
    subdirs,
    with_layout_check,
)

log = logging.getLogger(__name__)

TEMPLATES = "openai_imagenet"  # the 80 CLIP prompts WiSE-FT and model soups use for ImageNet and its shifts


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet wnids in sorted order: position = class index."""
    return tuple(metadata("imagenet")["wnids"])


@functools.cache
def imagenet_classnames() -> tuple[str, ...]:
    """CLIP's ImageNet class names in class-index order (open_clip's ``IMAGENET_CLASSNAMES``)."""
    return tuple(metadata("imagenet")["classnames"])


@functools.cache
def _wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


def official_size(name: str) -> int:
    """Official example counts (``imagenet_val`` 50,000, ``imagenet_v2`` 10,000, ...)."""
    return int(metadata("imagenet")["official_sizes"][name])


def subset_indices(name: str) -> list[int]:
    """The sorted ImageNet class indices of ``imagenet_r`` or ``imagenet_a`` (200 each)."""
    return list(metadata(name)["imagenet_indices"])


def objectnet_classes() -> list[dict]:
    """The 113 mapped ObjectNet classes, sorted by folder: ``{folder, name, imagenet_indices}``."""
    return list(metadata("objectnet")["classes"])


# ------------------------------------------------------------------------------------------------ layouts
LAYOUT_IMAGENET = """\
<data_root>/imagenet/train/n01440764/n01440764_10026.JPEG   (1000 wnid folders)
<data_root>/imagenet/val/n01440764/ILSVRC2012_val_00000293.JPEG   (1000 wnid folders, 50 images each;
    also accepted: imagenet/val_in_folder/ as WiSE-FT names it, or CoOp's imagenet/images/{train,val}/)
The raw val tarball is flat: sort it into wnid folders first (e.g. pytorch/examples' extract_ILSVRC.sh)."""
LAYOUT_V2 = """\
<data_root>/ImageNetV2-matched-frequency/0/<hash>.jpeg   (folders 0..999 named
    by class index; the name imagenetv2_pytorch gives it. Also accepted: the tarball's own folder name
    imagenetv2-matched-frequency-format-val/, directly or under imagenetv2/)"""
LAYOUT_SKETCH = """\
<data_root>/sketch/n01440764/n01440764_10026.JPEG   (1000 wnid folders, 50,889 images;
    also accepted: imagenet-sketch/images/, imagenet-sketch/sketch/)"""
LAYOUT_R = """\
<data_root>/imagenet-r/n01443537/art_0.jpg   (200 wnid folders, 30,000 images;
    also accepted: imagenet-rendition/imagenet-r/ as CoOp puts it)"""
LAYOUT_A = """\
<data_root>/imagenet-a/n01498041/0.000116_digital clock _ digital clock_0.865662.jpg   (200 wnid folders,
    7,500 images; also accepted: imagenet-adversarial/imagenet-a/ as CoOp puts it)"""
LAYOUT_OBJECTNET = """\
<data_root>/objectnet-1.0/images/alarm_clock/0a1b2c3d.png   (313 folders named by ObjectNet class; the 113 that
    map to ImageNet are used, 18,574 images)"""

DIRS = {
    "train": ("imagenet/train", "imagenet/images/train"),
    "val": ("imagenet/val_in_folder", "imagenet/val", "imagenet/images/val"),
    "imagenet_v2": ("ImageNetV2-matched-frequency", "imagenetv2-matched-frequency-format-val",
                    "imagenetv2/imagenetv2-matched-frequency-format-val", "imagenetv2/ImageNetV2-matched-frequency"),
    "imagenet_sketch": ("sketch", "imagenet-sketch/images", "imagenet-sketch/sketch", "ImageNet-Sketch/sketch"),
    "imagenet_r": ("imagenet-r", "imagenet-rendition/imagenet-r"),
    "imagenet_a": ("imagenet-a", "imagenet-adversarial/imagenet-a"),
    "objectnet": ("objectnet-1.0/images",),
}


def _imagenet_split(split: str) -> str:
    """``train``, or ``val`` (``test`` is an alias: ImageNet's labelled test set is its val set)."""
    if split in ("val", "test"):
        return "val"
    if split == "train":
        return "train"
    raise ValueError(f"ImageNet has splits 'train' and 'val' ('test' means 'val'), not {split!r}")


def _test_only(split: str, title: str) -> None:
    if split not in ("test", "val"):
        raise ValueError(f"{title} is a test set only (split 'test'), not {split!r}")


def crop_border(image, border: int = 2):
    """The 2-pixel border crop the official ObjectNet code defines (ObjectNet images carry a 1-pixel frame)."""
    width, height = image.size
    return image.crop((border, border, width - border, height - border))


# --------------------------------------------------------------------------------------------- ImageNet
def _imagenet_dir(split: str, root, path):
    split = _imagenet_split(split)
    return split, find_dir(root, DIRS[split], title=f"ImageNet {split}", layout=LAYOUT_IMAGENET, path=path)


def check_imagenet(split: str = "val", *, root=None, path=None, **_) -> None:
    split, directory = _imagenet_dir(split, root, path)
    class_folders(directory, _wnid_index(), title=f"ImageNet {split}", layout=LAYOUT_IMAGENET)


@with_layout_check(check_imagenet)
def imagenet(split: str = "val", transform: Callable | None = None, *, root: str | None = None,
             path: str | None = None, templates: str | Sequence[str] = TEMPLATES) -> TaskData:
    """ImageNet-1k ``train`` or ``val`` (``test`` = ``val``): 1000 classes in sorted-wnid order."""
    split, directory = _imagenet_dir(split, root, path)
    samples = scan_class_folders(directory, _wnid_index(), title=f"ImageNet {split}", layout=LAYOUT_IMAGENET,
                                 expected=1000)
    return TaskData(ImageList(samples, transform), list(imagenet_classnames()), templates,
                    expected_size=official_size(f"imagenet_{split}"), description=f"ImageNet {split} ({directory})",
                    extras={"root": str(directory)})


def _val_classes_check(split: str = "val", *, root=None, path=None, **_) -> None:
    check_imagenet(split, root=root, path=path)


def _val_classes(which: str, split: str, transform, root, path, templates) -> TaskData:
    title = f"ImageNet val on the {which} classes"
    split, directory = _imagenet_dir(split, root, path)
    indices = subset_indices(which)
    position = {imagenet_wnids()[c]: i for i, c in enumerate(indices)}
    class_folders(directory, _wnid_index(), title=title, layout=LAYOUT_IMAGENET)  # no stray folders
    samples = scan_class_folders(directory, position, title=title, layout=LAYOUT_IMAGENET, unknown="skip",
                                 expected=len(indices))
    names = [imagenet_classnames()[c] for c in indices]
    return TaskData(ImageList(samples, transform), names, templates, projection=SelectColumns(indices),
                    expected_size=50 * len(indices) if split == "val" else None,
                    description=f"{title} ({directory})", extras={"root": str(directory), "imagenet_indices": indices})


@with_layout_check(_val_classes_check)
def imagenet_r_val_classes(split: str = "val", transform: Callable | None = None, *, root: str | None = None,
                           path: str | None = None, templates: str | Sequence[str] = TEMPLATES) -> TaskData:
    """ImageNet val restricted to ImageNet-R's 200 classes (WiSE-FT's ``ImageNetRValClasses``): 10,000 images."""
    return _val_classes("imagenet_r", split, transform, root, path, templates)


@with_layout_check(_val_classes_check)
def imagenet_a_val_classes(split: str = "val", transform: Callable | None = None, *, root: str | None = None,
                           path: str | None = None, templates: str | Sequence[str] = TEMPLATES) -> TaskData:
    """ImageNet val restricted to ImageNet-A's 200 classes (WiSE-FT's ``ImageNetAValClasses``): 10,000 images."""
    return _val_classes("imagenet_a", split, transform, root, path, templates)


# ------------------------------------------------------------------------------------------- ImageNet-V2
def _v2_label(name: str) -> int | None:
    return int(name) if name.isdigit() and 0 <= int(name) < 1000 and name == str(int(name)) else None


def check_imagenet_v2(split: str = "test", *, root=None, path=None, **_) -> None:
    _test_only(split, "ImageNet-V2")
    directory = find_dir(root, DIRS["imagenet_v2"], title="ImageNet-V2", layout=LAYOUT_V2, path=path)
    class_folders(directory, _v2_label, title="ImageNet-V2", layout=LAYOUT_V2)


@with_layout_check(check_imagenet_v2)
def imagenet_v2(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
                path: str | None = None, templates: str | Sequence[str] = TEMPLATES) -> TaskData:
    """ImageNet-V2 matched frequency: label = the folder's name (an ImageNet class index)."""
    _test_only(split, "ImageNet-V2")
    directory = find_dir(root, DIRS["imagenet_v2"], title="ImageNet-V2", layout=LAYOUT_V2, path=path)
    samples = scan_class_folders(directory, _v2_label, title="ImageNet-V2", layout=LAYOUT_V2, expected=1000)
    # imagenetv2_pytorch opens images as stored (no RGB conversion before the transform, whose own conversion
    # follows the resize); so does this, for identical inputs
    return TaskData(ImageList(samples, transform, mode=None), list(imagenet_classnames()), templates,
                    expected_size=official_size("imagenet_v2"), description=f"ImageNet-V2 ({directory})",
                    extras={"root": str(directory)})


# ---------------------------------------------------------------------------------------- ImageNet-Sketch
def check_imagenet_sketch(split: str = "test", *, root=None, path=None, **_) -> None:
    _test_only(split, "ImageNet-Sketch")
    directory = find_dir(root, DIRS["imagenet_sketch"], title="ImageNet-Sketch", layout=LAYOUT_SKETCH, path=path)
    class_folders(directory, _wnid_index(), title="ImageNet-Sketch", layout=LAYOUT_SKETCH)


@with_layout_check(check_imagenet_sketch)
def imagenet_sketch(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
                    path: str | None = None, templates: str | Sequence[str] = TEMPLATES) -> TaskData:
    """ImageNet-Sketch: 1000 wnid folders, labels as ImageNet's."""
    _test_only(split, "ImageNet-Sketch")
    directory = find_dir(root, DIRS["imagenet_sketch"], title="ImageNet-Sketch", layout=LAYOUT_SKETCH, path=path)
    samples = scan_class_folders(directory, _wnid_index(), title="ImageNet-Sketch", layout=LAYOUT_SKETCH,
                                 expected=1000)
    return TaskData(ImageList(samples, transform), list(imagenet_classnames()), templates,
                    expected_size=official_size("imagenet_sketch"), description=f"ImageNet-Sketch ({directory})",
                    extras={"root": str(directory)})


# --------------------------------------------------------------------------------------- ImageNet-R / -A
_SUBSETS = {"imagenet_r": ("ImageNet-R", LAYOUT_R), "imagenet_a": ("ImageNet-A", LAYOUT_A)}


def _subset_layout(which: str, split: str, root, path):
    title, layout = _SUBSETS[which]
    _test_only(split, title)
    directory = find_dir(root, DIRS[which], title=title, layout=layout, path=path)
    position = {w: i for i, w in enumerate(metadata(which)["wnids"])}
    return title, layout, directory, position


def _subset_check(which: str):
    def check(split: str = "test", *, root=None, path=None, **_) -> None:
        title, layout, directory, position = _subset_layout(which, split, root, path)
        class_folders(directory, position, title=title, layout=layout)
    return check


def _subset(which: str, split: str, transform, root, path, templates) -> TaskData:
    title, layout, directory, position = _subset_layout(which, split, root, path)
    samples = scan_class_folders(directory, position, title=title, layout=layout, expected=len(position))
    indices = subset_indices(which)
    names = [imagenet_classnames()[c] for c in indices]
    return TaskData(ImageList(samples, transform), names, templates, projection=SelectColumns(indices),
                    expected_size=official_size(which), description=f"{title} ({directory})",
                    extras={"root": str(directory), "imagenet_indices": indices})


@with_layout_check(_subset_check("imagenet_r"))
def imagenet_r(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
               path: str | None = None, templates: str | Sequence[str] = TEMPLATES) -> TaskData:
    """ImageNet-R: 200 classes; a 1000-way head is scored on their 200 columns."""
    return _subset("imagenet_r", split, transform, root, path, templates)


@with_layout_check(_subset_check("imagenet_a"))
def imagenet_a(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
               path: str | None = None, templates: str | Sequence[str] = TEMPLATES) -> TaskData:
    """ImageNet-A: 200 classes; a 1000-way head is scored on their 200 columns."""
    return _subset("imagenet_a", split, transform, root, path, templates)


# ---------------------------------------------------------------------------------------------- ObjectNet
def _objectnet_layout(split: str, root, path):
    _test_only(split, "ObjectNet")
    directory = find_dir(root, DIRS["objectnet"], title="ObjectNet", layout=LAYOUT_OBJECTNET, path=path)
    position = {c["folder"]: i for i, c in enumerate(objectnet_classes())}
    return directory, position


def check_objectnet(split: str = "test", *, root=None, path=None, **_) -> None:
    directory, position = _objectnet_layout(split, root, path)
    class_folders(directory, position, title="ObjectNet", layout=LAYOUT_OBJECTNET, unknown="skip")


@with_layout_check(check_objectnet)
def objectnet(split: str = "test", transform: Callable | None = None, *, root: str | None = None,
              path: str | None = None, border_crop: bool = False,
              templates: str | Sequence[str] = TEMPLATES) -> TaskData:
    """ObjectNet 1.0 on its 113 ImageNet-mapped classes; projection = max over each class's ImageNet logits.

    ``border_crop``: the official code defines a 2-pixel border crop but, because it composes it into the
    transform only after the test set has been built, never applies it; the published WiSE-FT / soups numbers
    are therefore without it, and so is the default here. ``border_crop=true`` applies it.
    """
    directory, position = _objectnet_layout(split, root, path)
    samples = scan_class_folders(directory, position, title="ObjectNet", layout=LAYOUT_OBJECTNET, unknown="skip",
                                 expected=len(position))
    classes = objectnet_classes()
    known = set(position) | set(metadata("objectnet")["unmapped_folders"])
    strange = [f for f in subdirs(directory) if f not in known]
    if strange:
        log.warning("ObjectNet: %d folder(s) in %s are not ObjectNet 1.0 classes and are ignored: %s",
                    len(strange), directory, ", ".join(strange[:5]))
    groups = [c["imagenet_indices"] for c in classes]
    return TaskData(ImageList(samples, transform, crop_border if border_crop else None), [c["name"] for c in classes],
                    templates, projection=MaxOverGroups(groups), expected_size=official_size("objectnet"),
                    description=f"ObjectNet ({directory}{', 2-pixel border crop' if border_crop else ''})",
                    extras={"root": str(directory), "imagenet_groups": groups, "border_crop": bool(border_crop)})
