"""The transfer sets of CLIP papers (the CoOp / CLIPFit family), read from local roots.

Two protocols, chosen by ``protocol`` (``auto``: CoOp's when its split file is there, else torchvision's):

* ``coop``: CoOp's fixed train/val/test splits, ``<data_root>/<coop dir>/split_zhou_<Name>.json`` (each entry
  ``[relative image path, label, class name]``), exactly the examples and labels CoOp, CoCoOp and CLIPFit use
  (the few-shot base-to-novel protocol relies on them). FGVCAircraft has no split file: CoOp reads the official
  ``images_variant_{train,val,test}.txt``, and so does this. UCF101 exists only in CoOp's mid-frame form.
* ``torchvision``: torchvision's dataset classes parse the official release under ``<data_root>`` (their own
  folder names, ``download=False``). Their native splits are used where they exist; a missing ``val`` is carved
  out of ``train`` (20% per class), and sets without any split (Caltech101, SUN397, EuroSAT) are split 50/20/30
  per class, as CoOp does when it builds its split, but with a keyed hash so the split is the same on every
  machine (it is not CoOp's random split: use its split files to compare with CoOp-family numbers).

Images are decoded by this package (PIL, RGB) from the parsed paths, in sorted path order; ``targets`` are exposed.
Class names are cleaned for prompts the way CoOp names them (``_`` -> space, CoOp's renames).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.datasets import ImageList
from wiseft_lab.data.layouts import layout_error, metadata, with_layout_check
from wiseft_lab.data.splits import hash_order

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PROTOCOLS = ("auto", "coop", "torchvision")


@dataclass(frozen=True)
class TransferSpec:
    """Where a transfer set lives in each protocol and how its torchvision class is read."""

    name: str
    title: str
    coop_dir: str                    # CoOp's folder under the data root
    coop_split_file: str | None      # CoOp's split file in it (None: FGVCAircraft's official split files)
    coop_image_dir: str              # what the split file's paths are relative to, inside coop_dir
    coop_layout: str
    torchvision_marker: str | None   # a path under the data root that torchvision's class needs
    torchvision_layout: str | None
    native_splits: tuple[str, ...] = ()  # torchvision splits, in this package's names


SPECS: dict[str, TransferSpec] = {s.name: s for s in (
    TransferSpec("caltech101", "Caltech101", "caltech-101", "split_zhou_Caltech101.json", "101_ObjectCategories",
                 "<data_root>/caltech-101/101_ObjectCategories/<class>/image_0001.jpg\n"
                 "<data_root>/caltech-101/split_zhou_Caltech101.json",
                 "caltech101/101_ObjectCategories",
                 "<data_root>/caltech101/101_ObjectCategories/<class>/image_0001.jpg   "
                 "(torchvision.datasets.Caltech101)"),
    TransferSpec("oxford_pets", "OxfordIIITPet", "oxford_pets", "split_zhou_OxfordPets.json", "images",
                 "<data_root>/oxford_pets/images/Abyssinian_1.jpg\n<data_root>/oxford_pets/annotations/\n"
                 "<data_root>/oxford_pets/split_zhou_OxfordPets.json",
                 "oxford-iiit-pet/annotations/test.txt",
                 "<data_root>/oxford-iiit-pet/images/*.jpg\n"
                 "<data_root>/oxford-iiit-pet/annotations/{trainval,test}.txt   (torchvision.datasets.OxfordIIITPet)",
                 ("train", "test")),
    TransferSpec("stanford_cars", "StanfordCars", "stanford_cars", "split_zhou_StanfordCars.json", "",
                 "<data_root>/stanford_cars/{cars_train,cars_test}/*.jpg\n"
                 "<data_root>/stanford_cars/split_zhou_StanfordCars.json",
                 "stanford_cars/devkit/cars_meta.mat",
                 "<data_root>/stanford_cars/{cars_train,cars_test}/*.jpg, cars_test_annos_withlabels.mat\n"
                 "<data_root>/stanford_cars/devkit/{cars_meta.mat,cars_train_annos.mat}   "
                 "(torchvision.datasets.StanfordCars; needs scipy)",
                 ("train", "test")),
    TransferSpec("flowers102", "Flowers102", "oxford_flowers", "split_zhou_OxfordFlowers.json", "jpg",
                 "<data_root>/oxford_flowers/jpg/image_00001.jpg\n"
                 "<data_root>/oxford_flowers/split_zhou_OxfordFlowers.json",
                 "flowers-102/setid.mat",
                 "<data_root>/flowers-102/jpg/image_00001.jpg, imagelabels.mat, setid.mat   "
                 "(torchvision.datasets.Flowers102; needs scipy)",
                 ("train", "val", "test")),
    TransferSpec("food101", "Food101", "food-101", "split_zhou_Food101.json", "images",
                 "<data_root>/food-101/images/<class>/<id>.jpg\n<data_root>/food-101/split_zhou_Food101.json",
                 "food-101/meta/test.json",
                 "<data_root>/food-101/images/<class>/<id>.jpg\n<data_root>/food-101/meta/{train,test}.json   "
                 "(torchvision.datasets.Food101)",
                 ("train", "test")),
    TransferSpec("fgvc_aircraft", "FGVCAircraft", "fgvc_aircraft", None, "images",
                 "<data_root>/fgvc_aircraft/images/1025794.jpg\n"
                 "<data_root>/fgvc_aircraft/{variants.txt, images_variant_train.txt, images_variant_val.txt, "
                 "images_variant_test.txt}   (the data/ folder of fgvc-aircraft-2013b, renamed)",
                 "fgvc-aircraft-2013b/data/variants.txt",
                 "<data_root>/fgvc-aircraft-2013b/data/images/*.jpg, variants.txt, images_variant_<split>.txt   "
                 "(torchvision.datasets.FGVCAircraft)",
                 ("train", "val", "test")),
    TransferSpec("sun397", "SUN397", "sun397", "split_zhou_SUN397.json", "SUN397",
                 "<data_root>/sun397/SUN397/a/abbey/sun_aaaulhwrhqgejnyt.jpg\n"
                 "<data_root>/sun397/split_zhou_SUN397.json",
                 "SUN397/ClassName.txt",
                 "<data_root>/SUN397/ClassName.txt\n<data_root>/SUN397/a/abbey/sun_*.jpg   "
                 "(torchvision.datasets.SUN397)"),
    TransferSpec("dtd", "DTD", "dtd", "split_zhou_DescribableTextures.json", "images",
                 "<data_root>/dtd/images/banded/banded_0002.jpg\n"
                 "<data_root>/dtd/split_zhou_DescribableTextures.json",
                 "dtd/dtd/labels/test1.txt",
                 "<data_root>/dtd/dtd/images/banded/banded_0002.jpg\n"
                 "<data_root>/dtd/dtd/labels/{train,val,test}1.txt   (torchvision.datasets.DTD, partition 1)",
                 ("train", "val", "test")),
    TransferSpec("eurosat", "EuroSAT", "eurosat", "split_zhou_EuroSAT.json", "2750",
                 "<data_root>/eurosat/2750/AnnualCrop/AnnualCrop_1.jpg\n<data_root>/eurosat/split_zhou_EuroSAT.json",
                 "eurosat/2750",
                 "<data_root>/eurosat/2750/AnnualCrop/AnnualCrop_1.jpg   (torchvision.datasets.EuroSAT)"),
    TransferSpec("ucf101", "UCF101", "ucf101", "split_zhou_UCF101.json", "UCF-101-midframes",
                 "<data_root>/ucf101/UCF-101-midframes/Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c01.jpg\n"
                 "<data_root>/ucf101/split_zhou_UCF101.json   (or ucfTrainTestlist/{classInd,trainlist01,"
                 "testlist01}.txt: split 01, val = 20% of train)",
                 None, None),
)}


# ------------------------------------------------------------------------------------------ class names
def _renames(name: str) -> dict[str, str]:
    return metadata("transfer")["renames"].get(name, {})


def clean_classname(name: str, raw: str) -> str:
    """A torchvision class name as CoOp writes it in its prompts."""
    raw = _renames(name).get(raw, raw)
    if name == "oxford_pets":
        raw = raw.lower()
    elif name == "stanford_cars":  # "AM General Hummer SUV 2000" -> "2000 AM General Hummer SUV"
        words = raw.split(" ")
        if words and words[-1].isdigit():
            raw = " ".join([words[-1], *words[:-1]])
    elif name == "sun397":  # "apartment_building/outdoor" -> "outdoor apartment building"
        raw = " ".join(reversed(raw.split("/")))
    return raw.replace("_", " ").strip()


# ---------------------------------------------------------------------------------------- split helpers
def split_per_class(labels: np.ndarray, fractions: Sequence[float], *, key: str, seed: int = 0) -> list[np.ndarray]:
    """Cut each class into consecutive parts of a keyed-hash order: ``round(f * n)`` examples per fraction, the rest
    last (CoOp's rounding). Returns sorted index arrays, one per fraction plus the remainder."""
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        members = hash_order(np.flatnonzero(labels == label), seed, key)
        start = 0
        for i, fraction in enumerate(fractions):
            count = round(fraction * len(members))
            parts[i].append(members[start:start + count])
            start += count
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(p)) if p else np.arange(0) for p in parts]


# ------------------------------------------------------------------------------------------ CoOp protocol
def _coop_dir(spec: TransferSpec, root, path) -> Path | None:
    if path is not None:
        return Path(path).expanduser()
    return Path(root).expanduser() / spec.coop_dir if root is not None else None


def _coop_available(spec: TransferSpec, directory: Path | None) -> bool:
    if directory is None or not directory.is_dir():
        return False
    if spec.name == "fgvc_aircraft":
        return (directory / "variants.txt").is_file()
    if (directory / spec.coop_split_file).is_file():
        return True
    return spec.name == "ucf101" and (directory / "ucfTrainTestlist" / "classInd.txt").is_file()


def _read_coop_split(spec: TransferSpec, directory: Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    with open(directory / spec.coop_split_file, encoding="utf-8") as f:
        content = json.load(f)
    names: dict[int, str] = {}
    for part in SPLITS:
        for _, label, classname in content.get(part, []):
            names.setdefault(int(label), classname)
    if sorted(names) != list(range(len(names))):
        raise layout_error(spec.title, f"{directory / spec.coop_split_file}: labels are not 0..n-1", spec.coop_layout)
    image_dir = directory / spec.coop_image_dir
    samples = [(str(image_dir / impath), int(label)) for impath, label, _ in content[split]]
    return samples, [names[i].replace("_", " ") for i in range(len(names))]


def _read_fgvc(directory: Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    classes = [line.strip() for line in (directory / "variants.txt").read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for line in (directory / f"images_variant_{split}.txt").read_text().splitlines():
        if line.strip():
            image, variant = line.strip().split(" ", 1)
            samples.append((str(directory / "images" / f"{image}.jpg"), index[variant]))
    return samples, classes


def _read_ucf_lists(directory: Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """CoOp's construction from the official split 01 (without its random 80/20 train/val draw)."""
    lists = directory / "ucfTrainTestlist"
    label_of: dict[str, int] = {}
    for line in (lists / "classInd.txt").read_text().splitlines():
        if line.strip():
            number, action = line.strip().split(" ")
            label_of[action] = int(number) - 1
    renamed = {a: "_".join(re.findall("[A-Z][^A-Z]*", a)) for a in label_of}
    names = [renamed[a].replace("_", " ") for a in sorted(label_of, key=label_of.get)]
    file = "testlist01.txt" if split == "test" else "trainlist01.txt"
    samples = []
    for line in (lists / file).read_text().splitlines():
        if line.strip():
            action, video = line.strip().split(" ")[0].split("/")
            image = directory / SPECS["ucf101"].coop_image_dir / renamed[action] / video.replace(".avi", ".jpg")
            samples.append((str(image), label_of[action]))
    if split != "test":
        labels = np.asarray([y for _, y in samples])
        val, train = split_per_class(labels, [0.2], key="ucf101:trainval")
        samples = [samples[i] for i in (train if split == "train" else val)]
    return samples, names


def _read_coop(spec: TransferSpec, directory: Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    if spec.name == "fgvc_aircraft":
        return _read_fgvc(directory, split)
    if spec.name == "ucf101" and not (directory / spec.coop_split_file).is_file():
        return _read_ucf_lists(directory, split)
    return _read_coop_split(spec, directory, split)


# ----------------------------------------------------------------------------------- torchvision protocol
def _torchvision_read(spec: TransferSpec, root: Path, split: str | None):
    """``(samples, raw class names)`` of torchvision's parse of the release (``split`` None: the whole set)."""
    from torchvision import datasets as tv

    name = spec.name
    if name == "caltech101":
        ds = tv.Caltech101(str(root), target_type="category", download=False)
        base = Path(ds.root) / "101_ObjectCategories"
        paths = [base / ds.categories[y] / f"image_{i:04d}.jpg" for i, y in zip(ds.index, ds.y, strict=True)]
        return _pairs(paths, ds.y), list(ds.categories)
    if name == "oxford_pets":
        ds = tv.OxfordIIITPet(str(root), split="trainval" if split == "train" else "test", download=False)
        return _pairs(ds._images, ds._labels), list(ds.classes)
    if name == "stanford_cars":
        ds = tv.StanfordCars(str(root), split=split, download=False)
        return [(str(p), int(y)) for p, y in ds._samples], list(ds.classes)
    if name == "flowers102":
        ds = tv.Flowers102(str(root), split=split, download=False)
        return _pairs(ds._image_files, ds._labels), list(ds.classes)
    if name == "food101":
        ds = tv.Food101(str(root), split=split, download=False)
        return _pairs(ds._image_files, ds._labels), list(ds.classes)
    if name == "fgvc_aircraft":
        ds = tv.FGVCAircraft(str(root), split=split, annotation_level="variant", download=False)
        return _pairs(ds._image_files, ds._labels), list(ds.classes)
    if name == "sun397":
        ds = tv.SUN397(str(root), download=False)
        return _pairs(ds._image_files, ds._labels), list(ds.classes)
    if name == "dtd":
        ds = tv.DTD(str(root), split=split, partition=1, download=False)
        return _pairs(ds._image_files, ds._labels), list(ds.classes)
    if name == "eurosat":
        ds = tv.EuroSAT(str(root), download=False)
        return [(str(p), int(y)) for p, y in ds.samples], list(ds.classes)
    raise ValueError(f"{spec.title} has no torchvision reader")


def _pairs(paths, labels) -> list[tuple[str, int]]:
    return [(str(p), int(y)) for p, y in zip(paths, labels, strict=True)]


def _read_release(spec: TransferSpec, root: Path, split: str | None) -> tuple[list[tuple[str, int]], list[str]]:
    """:func:`_torchvision_read`, with torchvision's errors (missing files, checksums, scipy) as layout errors."""
    try:
        return _torchvision_read(spec, root, split)
    except (RuntimeError, ImportError) as err:
        scipy = "scipy" in str(err).lower() or getattr(err, "name", None) == "scipy"
        hint = (" torchvision reads this release's .mat files with scipy: pip install scipy, or use CoOp's split "
                "file (protocol=coop)." if scipy else "")
        raise layout_error(spec.title, f"torchvision could not read it under {root}: {err}.{hint}",
                           spec.torchvision_layout or spec.coop_layout) from err


def _torchvision_samples(spec: TransferSpec, root: Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    if split in spec.native_splits and not (split == "train" and "val" not in spec.native_splits):
        samples, classes = _read_release(spec, root, split)
    elif spec.native_splits:  # train/val carved from the native train split: 80 / 20 per class
        samples, classes = _read_release(spec, root, "train")
        samples = sorted(samples)
        val, train = split_per_class(np.asarray([y for _, y in samples]), [0.2], key=f"{spec.name}:val")
        samples = [samples[i] for i in (train if split == "train" else val)]
    else:  # no split at all: 50 / 20 / 30 per class
        samples, classes = _read_release(spec, root, None)
        samples = sorted(samples)
        parts = dict(zip(SPLITS, split_per_class(np.asarray([y for _, y in samples]), [0.5, 0.2],
                                                 key=f"{spec.name}:split"), strict=True))
        samples = [samples[i] for i in parts[split]]
    ignored = metadata("transfer")["ignored_folders"].get(spec.name, [])
    if ignored:  # CoOp leaves these classes out (Caltech101's Faces_easy); relabel the rest in order
        keep = [i for i, c in enumerate(classes) if c not in ignored]
        new = {old: new for new, old in enumerate(keep)}
        samples = [(p, new[y]) for p, y in samples if y in new]
        classes = [classes[i] for i in keep]
    return sorted(samples), [clean_classname(spec.name, c) for c in classes]


# --------------------------------------------------------------------------------------------- builders
@dataclass(frozen=True)
class _Source:
    spec: TransferSpec
    protocol: str
    directory: Path


def _resolve(name: str, split: str, root, path, protocol: str) -> _Source:
    if name not in SPECS:
        raise ValueError(f"Unknown transfer set {name!r}; known: {sorted(SPECS)}")
    if split not in SPLITS:
        raise ValueError(f"Transfer sets have splits {SPLITS}, not {split!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    spec = SPECS[name]
    coop = _coop_dir(spec, root, path)
    if protocol in ("auto", "coop") and _coop_available(spec, coop):
        return _Source(spec, "coop", coop)
    marker = Path(root).expanduser() / spec.torchvision_marker if root and spec.torchvision_marker else None
    if protocol in ("auto", "torchvision") and marker is not None and marker.exists():
        if protocol == "auto" and spec.coop_split_file is not None:
            log.warning("%s: CoOp's split file %s is not there, so the official splits are read through torchvision: "
                        "numbers are not comparable with CoOp-family tables (protocol=coop makes this an error).",
                        spec.title, Path(coop) / spec.coop_split_file)
        return _Source(spec, "torchvision", Path(root).expanduser())
    layouts = {"coop": spec.coop_layout, "torchvision": spec.torchvision_layout}
    wanted = [p for p in ("coop", "torchvision") if protocol in ("auto", p) and layouts[p]]
    layout = "\n".join(f"[{p}]\n{layouts[p]}" for p in wanted)
    looked = [f"{coop}{'' if spec.coop_split_file is None else '/' + spec.coop_split_file}" if "coop" in wanted
              else None, str(marker) if "torchvision" in wanted and marker is not None else None]
    looked_text = "\n".join(f"    {p}" for p in looked if p)
    raise layout_error(spec.title, f"not found (protocol={protocol}); looked for:\n{looked_text}", layout)


def _check(split: str = "train", *, name: str, root=None, path=None, protocol: str = "auto", **_) -> None:
    _resolve(name, split, root, path, protocol)


@with_layout_check(_check)
def transfer_set(split: str = "train", transform: Callable | None = None, *, name: str, root: str | None = None,
                 path: str | None = None, protocol: str = "auto",
                 templates: str | Sequence[str] | None = None) -> TaskData:
    """A CLIP transfer set (``name``: caltech101, oxford_pets, stanford_cars, flowers102, food101, fgvc_aircraft,
    sun397, dtd, eurosat, ucf101) on ``split`` (train / val / test).

    ``root``: the data root; ``path``: the data set's own folder in CoOp's layout, if elsewhere. ``templates``: the
    zero-shot prompts (default ``clip_<name>``, CLIP's own for this set).
    """
    source = _resolve(name, split, root, path, protocol)
    spec = source.spec
    if source.protocol == "coop":
        samples, classnames = _read_coop(spec, source.directory, split)
        expected = metadata("transfer")["coop_split_sizes"][name][split]
        if spec.name == "ucf101" and not (source.directory / spec.coop_split_file).is_file():
            expected = None  # CoOp's val is a random draw we do not reproduce without its split file
    else:
        samples, classnames = _torchvision_samples(spec, source.directory, split)
        native_test = split == "test" and "test" in spec.native_splits
        expected = metadata("transfer")["torchvision_test_sizes"].get(name) if native_test else None
    if not samples:
        raise layout_error(spec.title, f"the {split} split is empty ({source.directory})",
                           spec.coop_layout if source.protocol == "coop" else spec.torchvision_layout)
    first = Path(samples[0][0])
    if not first.is_file():
        raise layout_error(spec.title, f"the {split} split names {first}, which does not exist (images in the "
                                       "wrong folder?)",
                           spec.coop_layout if source.protocol == "coop" else spec.torchvision_layout)
    return TaskData(ImageList(samples, transform), classnames, templates or f"clip_{name}", expected_size=expected,
                    description=f"{spec.title} {split} ({source.protocol} protocol, {source.directory})",
                    extras={"protocol": source.protocol, "root": str(source.directory)})
