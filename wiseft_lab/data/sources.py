"""Dataset builders referenced by the ``data``/``eval`` configs through ``_target_``.

Every builder has the signature ``builder(split, transform, **options) -> TaskData`` and fails early,
naming the expected path and layout, when the data is not where the config says.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torchvision.datasets import ImageFolder

from wiseft_lab.data import synthetic
from wiseft_lab.data.base import TaskData
from wiseft_lab.data.datasets import ImageList, pil_open
from wiseft_lab.data.layouts import layout_error, with_layout_check


def synthetic_styles(
    split: str,
    transform: Callable | None = None,
    *,
    style: str = synthetic.REFERENCE_STYLE,
    n_per_class: int = 100,
    seed: int = 0,
    image_size: int = 64,
) -> TaskData:
    """The embedded demo benchmark: procedurally drawn classes in one of several styles."""
    dataset = synthetic.SyntheticShapes(style, split, n_per_class, seed=seed, image_size=image_size,
                                        transform=transform)
    return TaskData(dataset, list(synthetic.CLASSNAMES), list(synthetic.TEMPLATES),
                    description=f"synthetic {style} ({split})")


def clean_classname(name: str) -> str:
    """Folder names as prompt words: ``golden_retriever`` -> ``golden retriever``."""
    return name.replace("_", " ").strip()


def load_classnames(classnames: str | Sequence[str] | None) -> list[str] | None:
    """A list of names, or a file of them: ``.json`` (a list) or text (one name per line)."""
    if classnames is None or not isinstance(classnames, str):
        return None if classnames is None else [str(c) for c in classnames]
    path = Path(classnames).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Class name file not found: {path.resolve()} (give a list or a .json/.txt file)")
    if path.suffix == ".json":
        return [str(c) for c in json.loads(path.read_text(encoding="utf-8"))]
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ folder
def _folder_layout(root: str, split: str | None) -> str:
    where = f"{root}/{split}" if split else root
    return (f"{where}/<class_a>/xxx.png\n{where}/<class_b>/yyy.jpg\n"
            "(class index = sorted folder order, torchvision's ImageFolder rule)")


def _folder_dir(split: str, root: str) -> Path:
    split_dir = Path(root).expanduser() / split
    if not split_dir.is_dir():
        raise layout_error("Image folder", f"split directory not found: {split_dir.resolve()}",
                           _folder_layout(root, split),
                           "Set data.dataset.root=... (or eval.datasets.<name>.root=...) to the folder holding "
                           "the split directories.")
    return split_dir


def _check_folder(split: str = "train", *, root: str, **_) -> None:
    _folder_dir(split, root)


def folder_classnames(folders: Sequence[str], classnames: str | Sequence[str] | Mapping[str, str] | None,
                      directory: Path) -> list[str]:
    """Prompt names of sorted class ``folders``: the folder names (``_`` as spaces), a list / file of names in
    folder order, or a mapping ``{folder: class name}`` (folders it leaves out keep their own names)."""
    if isinstance(classnames, Mapping):
        unknown = sorted(set(classnames) - set(folders))
        if unknown:
            raise ValueError(f"classnames maps folders that are not in {directory}: {unknown} (its folders: "
                             f"{list(folders)})")
        return [str(classnames.get(f, clean_classname(f))) for f in folders]
    given = load_classnames(classnames)
    names = given if given is not None else [clean_classname(c) for c in folders]
    if len(names) != len(folders):
        raise ValueError(f"{len(names)} class names given for {len(folders)} folders in {directory}.")
    return names


def _folder_data(directory: Path, transform: Callable | None, classnames, templates, expected_size,
                 layout: str) -> TaskData:
    try:
        dataset = ImageFolder(str(directory), transform=transform, loader=pil_open)  # names a bad file
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise layout_error("Image folder", str(err), layout) from err
    return TaskData(dataset, folder_classnames(dataset.classes, classnames, directory), templates,
                    expected_size=expected_size, description=f"folder {directory}")


@with_layout_check(_check_folder)
def image_folder(
    split: str,
    transform: Callable | None = None,
    *,
    root: str,
    classnames: str | Sequence[str] | Mapping[str, str] | None = None,
    templates: str | Sequence[str] = "simple",
    expected_size: int | None = None,
) -> TaskData:
    """Any ``root/<split>/<class>/<image>`` tree; class index = sorted folder order (torchvision's rule).

    ``classnames``: the prompt names in class-index order (a list, or a .json/.txt file), or ``{folder: name}``;
    default: the folder names with ``_`` as spaces. ``expected_size``: the official count, to be warned about
    incomplete copies.
    """
    return _folder_data(_folder_dir(split, root), transform, classnames, templates, expected_size,
                        _folder_layout(root, split))


def _shift_dir(split: str, root: str) -> Path:
    base = Path(root).expanduser()
    if not base.is_dir():
        raise layout_error("Shift folder", f"directory not found: {base.resolve()}", _folder_layout(root, None),
                           "Give eval.shifts an existing folder, e.g. eval.shifts='{sketches: /data/sketch}'.")
    return base / split if (base / split).is_dir() else base


def _check_shift_folder(split: str = "test", *, root: str, **_) -> None:
    _shift_dir(split, root)


@with_layout_check(_check_shift_folder)
def shift_folder(
    split: str = "test",
    transform: Callable | None = None,
    *,
    root: str,
    classnames: str | Sequence[str] | Mapping[str, str] | None = None,
    templates: str | Sequence[str] = "simple",
    expected_size: int | None = None,
) -> TaskData:
    """A shifted eval set: ``root/<class>/<image>`` (or ``root/<split>/<class>/<image>`` when that folder exists).

    What ``eval.shifts`` entries build; ``classnames`` as for :func:`image_folder` (``{folder: class name}`` maps
    folders named unlike the training classes). Class names are matched to the head's by name before any run.
    """
    return _folder_data(_shift_dir(split, root), transform, classnames, templates, expected_size,
                        _folder_layout(root, None))


# --------------------------------------------------------------------------------------------------- csv
CSV_LAYOUT = """\
path,label[,split]          (a header row naming the columns is optional)
images/cat_01.jpg,cat,train  (label: a class name, or an index into `classnames`)
images/dog_07.jpg,1,test     (relative paths are relative to `image_root`, default the CSV file's folder)
`file` may contain {split}, e.g. ${paths.data_root}/my_dataset/{split}.csv, instead of a split column."""


def _csv_file(split: str, file: str) -> Path:
    path = Path(str(file).replace("{split}", split)).expanduser()
    if not path.is_file():
        raise layout_error("CSV data", f"file not found: {path.resolve()}", CSV_LAYOUT,
                           "Set data.dataset.file=... (or eval.datasets.<name>.file=...).")
    return path


def _check_csv(split: str = "train", *, file: str, **_) -> None:
    _csv_file(split, file)


def _read_rows(path: Path, delimiter: str) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f, delimiter=delimiter) if row]
    if rows and [c.lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    bad = [i for i, row in enumerate(rows) if len(row) not in (2, 3)]
    if bad:
        raise layout_error("CSV data", f"{path}: row {bad[0] + 1} has {len(rows[bad[0]])} columns, expected 2 or 3",
                           CSV_LAYOUT)
    return rows


@with_layout_check(_check_csv)
def csv_source(
    split: str,
    transform: Callable | None = None,
    *,
    file: str,
    image_root: str | None = None,
    classnames: str | Sequence[str] | None = None,
    templates: str | Sequence[str] = "simple",
    expected_size: int | None = None,
    delimiter: str = ",",
) -> TaskData:
    """Images listed in a CSV file of ``path,label[,split]`` rows (see :data:`CSV_LAYOUT`).

    Labels are class names or indices. Without ``classnames``, name labels define the classes in sorted order
    over the whole file (so every split agrees); index labels then need ``classnames``.
    """
    path = _csv_file(split, file)
    rows = _read_rows(path, delimiter)
    all_rows = rows
    if any(len(r) == 3 for r in rows):
        rows = [r for r in rows if len(r) == 3 and r[2] == split]
        if not rows:
            splits = sorted({r[2] for r in all_rows if len(r) == 3})
            raise layout_error("CSV data", f"{path} has no rows of split {split!r} (splits: {splits})", CSV_LAYOUT)
    if not rows:
        raise layout_error("CSV data", f"{path} lists no images", CSV_LAYOUT)
    names = load_classnames(classnames)
    numeric = all(r[1].lstrip("-").isdigit() for r in all_rows)
    if names is None:
        if numeric:
            raise ValueError(f"{path} gives class indices: pass the class names with classnames=[...] or a file.")
        raw = sorted({r[1] for r in all_rows})
        index, names = {n: i for i, n in enumerate(raw)}, [clean_classname(n) for n in raw]
    else:
        index = {n: i for i, n in enumerate(names)}
    base = Path(image_root).expanduser() if image_root else path.parent
    samples = []
    for image, label, *_ in rows:
        if numeric:
            y = int(label)
            if not 0 <= y < len(names):
                raise ValueError(f"{path}: label {y} is outside 0..{len(names) - 1}")
        elif label in index:
            y = index[label]
        else:
            raise ValueError(f"{path}: label {label!r} is not among the {len(names)} class names given")
        samples.append((str(base / image), y))
    if not Path(samples[0][0]).is_file():
        raise layout_error("CSV data", f"image not found: {samples[0][0]} (relative paths are resolved against "
                                       f"{base}; set image_root=...)", CSV_LAYOUT)
    return TaskData(ImageList(samples, transform), names, templates, expected_size=expected_size,
                    description=f"csv {path} ({split})")
