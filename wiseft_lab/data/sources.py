"""Dataset builders referenced by the ``data``/``eval`` configs through ``_target_``.

Every builder has the signature ``builder(split, transform, **options) -> TaskData`` and fails early,
naming the expected path and layout, when the data is not where the config says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torchvision.datasets import ImageFolder

from wiseft_lab.data import synthetic
from wiseft_lab.data.base import TaskData


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


def image_folder(
    split: str,
    transform: Callable | None = None,
    *,
    root: str,
    classnames: Sequence[str] | None = None,
    templates: str | Sequence[str] = "simple",
) -> TaskData:
    """Any ``root/<split>/<class>/<image>`` tree; class index = sorted folder order (torchvision's rule)."""
    split_dir = Path(root).expanduser() / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"Image folder split not found: {split_dir}\nExpected layout:\n  {root}/{split}/<class_a>/xxx.png\n"
            f"  {root}/{split}/<class_b>/yyy.jpg\n(set data.dataset.root=... or eval.datasets.<name>.root=...)"
        )
    dataset = ImageFolder(str(split_dir), transform=transform)
    names = list(classnames) if classnames is not None else [clean_classname(c) for c in dataset.classes]
    if len(names) != len(dataset.classes):
        raise ValueError(f"{len(names)} class names given for {len(dataset.classes)} folders in {split_dir}.")
    return TaskData(dataset, names, templates, description=f"folder {split_dir}")
