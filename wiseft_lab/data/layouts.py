"""Finding data sets on disk, reading them without surprises, and failing early and clearly when they are not there.

Everything reads from local paths under ``paths.data_root`` (env ``WISEFT_DATA_ROOT``). A missing directory or a
wrong layout raises :class:`DataLayoutError` naming the path that was expected and showing the expected tree,
before any training starts (:func:`wiseft_lab.data.eval_sets.check_data_layouts` runs every configured builder's
layout check first).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wiseft_lab.errors import UserFacingError

log = logging.getLogger(__name__)

METADATA_DIR = Path(__file__).parent / "metadata"
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ROOT_HINT = ("Set the data root with paths.data_root=<dir> (or the environment variable WISEFT_DATA_ROOT), "
             "or point this data set at its directory with its `path` option.")


class DataLayoutError(UserFacingError, FileNotFoundError):
    """A data set is missing or not laid out as expected; the message shows the expected layout."""


@functools.cache
def metadata(name: str) -> dict:
    """A JSON file of ``wiseft_lab/data/metadata`` (class lists and mappings; each says where it comes from)."""
    with open(METADATA_DIR / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


def layout_error(title: str, problem: str, layout: str, hint: str = ROOT_HINT) -> DataLayoutError:
    body = "\n".join(f"    {line}" for line in layout.strip("\n").splitlines())
    return DataLayoutError(f"{title}: {problem}\n  Expected layout:\n{body}\n  {hint}")


def find_dir(root: str | os.PathLike | None, candidates: Sequence[str], *, title: str, layout: str,
             path: str | os.PathLike | None = None) -> Path:
    """The first of ``root/<candidate>`` that is a directory (or ``path`` when given), else a DataLayoutError."""
    if path is not None:
        chosen = Path(path).expanduser()
        if chosen.is_dir():
            return chosen
        raise layout_error(title, f"directory not found: {chosen.resolve()}", layout)
    if root is None:
        raise layout_error(title, "no data root given", layout)
    base = Path(root).expanduser()
    for candidate in candidates:
        directory = base / candidate
        if directory.is_dir():
            return directory
    looked = "\n".join(f"    {(base / c).resolve()}" for c in candidates)
    where = "" if base.is_dir() else f" (the data root {base.resolve()} itself does not exist)"
    raise layout_error(title, f"not found under the data root{where}; looked for:\n{looked}", layout)


def find_file(directory: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    return None


def is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def subdirs(directory: Path) -> list[str]:
    """Sorted names of the sub-directories (symlinks to directories count), hidden ones skipped."""
    with os.scandir(directory) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def images_under(directory: Path) -> list[str]:
    """Image files below ``directory``, recursively, in torchvision ``ImageFolder``'s order."""
    found = []
    for current, dirs, files in sorted(os.walk(directory, followlinks=True)):
        dirs.sort()
        found.extend(os.path.join(current, f) for f in sorted(files) if is_image(f))
    return found


def class_folders(directory: Path, label_of: Mapping[str, int] | Callable[[str], int | None], *,
                  title: str, layout: str, unknown: str = "error", expected: int | None = None) -> list[str]:
    """The sorted class folders of ``directory`` that have a label, after checking the layout (no file listing).

    A folder with no label is an error (``unknown="error"``: a wrong layout) or skipped (``unknown="skip"``:
    ObjectNet's unmapped classes). With ``expected`` (the number of classes), missing folders are logged.
    """
    lookup = label_of.get if isinstance(label_of, Mapping) else label_of
    folders = subdirs(directory)
    if not folders and any(is_image(f) for f in os.listdir(directory)):
        raise layout_error(title, f"{directory} holds images directly instead of one folder per class", layout)
    known = [f for f in folders if lookup(f) is not None]
    if unknown == "error" and len(known) != len(folders):
        odd = [f for f in folders if lookup(f) is None]
        raise layout_error(title, f"{len(odd)} folder(s) in {directory} are not classes of this data set: "
                                  f"{', '.join(odd[:5])}{' ...' if len(odd) > 5 else ''}", layout)
    if not known:
        raise layout_error(title, f"no class folders found in {directory}", layout)
    if expected is not None and len(known) < expected:
        log.warning("%s: only %d of its %d class folders are in %s; labels keep their official positions, but "
                    "the copy is incomplete.", title, len(known), expected, directory)
    return known


def scan_class_folders(directory: Path, label_of: Mapping[str, int] | Callable[[str], int | None], *,
                       title: str, layout: str, unknown: str = "error",
                       expected: int | None = None) -> list[tuple[str, int]]:
    """``(path, label)`` of every image of a ``<class folder>/<images>`` tree (see :func:`class_folders`)."""
    lookup = label_of.get if isinstance(label_of, Mapping) else label_of
    known = class_folders(directory, label_of, title=title, layout=layout, unknown=unknown, expected=expected)
    samples = [(p, int(lookup(f))) for f in known for p in images_under(directory / f)]
    if not samples:
        raise layout_error(title, f"no images (*{', *'.join(IMG_EXTENSIONS)}) found under {directory}", layout)
    return samples


# ---------------------------------------------------------------------------------------------- pre-flight checks
def with_layout_check(check: Callable[..., Any]):
    """Attach ``check`` (same keyword options as the builder, no transform) to a builder as ``builder.check``."""
    def attach(builder):
        builder.check = check
        return builder
    return attach


def check_builder(builder: Any) -> None:
    """Run the layout check of a (``functools.partial`` of a) builder and of builders nested in its options."""
    func = getattr(builder, "func", None)
    if func is None:
        return
    keywords = dict(getattr(builder, "keywords", {}) or {})
    for value in keywords.values():
        if isinstance(value, functools.partial):
            # a wrapper (base-to-novel's class_subset) calls the nested source with its own split
            nested = dict(value.keywords or {})
            if keywords.get("split") and "split" in nested:
                nested["split"] = keywords["split"]
            check_builder(functools.partial(value.func, *value.args, **nested))
    check = getattr(func, "check", None)
    if check is not None:
        keywords.pop("transform", None)
        check(*getattr(builder, "args", ()), **keywords)
