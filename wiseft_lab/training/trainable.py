"""Which entries of a classifier a method trains, and the report of them (``trainable_parameters.txt``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from wiseft_lab.io import atomic_write_text

log = logging.getLogger(__name__)


class Trainable:
    """A method's trainable set: a function of the classifier that returns parameter names.

    Name predicates (``Trainable.by_name``) cover most methods; rules that need the modules themselves
    ("every LayerNorm of the image tower") select from the model. Calling the rule returns the names.
    """

    def __init__(self, select: Callable[[torch.nn.Module], Iterable[str]]):
        self.select = select

    @classmethod
    def by_name(cls, predicate: Callable[[str], bool]) -> Trainable:
        return cls(lambda model: (name for name, _ in model.named_parameters() if predicate(name)))

    def __call__(self, model: torch.nn.Module) -> set[str]:
        return set(self.select(model))


def is_image_tower_or_head(name: str) -> bool:
    return name.startswith(("clip.visual.", "head."))


def is_head(name: str) -> bool:
    return name.startswith("head.")


def select_trainable(model: torch.nn.Module, rule: Trainable) -> list[str]:
    """Set ``requires_grad`` from a :class:`Trainable`; returns the trainable names in model order."""
    chosen = rule(model)
    unknown = chosen - {name for name, _ in model.named_parameters()}
    if unknown:
        raise KeyError(f"Trainable rule selected names that are not parameters: {sorted(unknown)[:5]}")
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
        if param.requires_grad:
            names.append(name)
    return names


def parameter_group(name: str) -> str:
    """Which part of an :class:`ImageClassifier` a parameter belongs to (for the trainable report)."""
    if name.startswith("clip.visual."):
        return "image tower"
    if name.startswith("head."):
        return "head"
    if name.startswith("clip.") and name != "clip.logit_scale":
        return "text tower"
    return "other"


def describe_trainable(model: torch.nn.Module) -> str:
    """``trainable_parameters.txt``: one ``name numel`` line per trainable tensor, per-part counts, then totals."""
    total = sum(p.numel() for p in model.parameters())
    lines, count, tensors = [], 0, 0
    groups: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            lines.append(f"{name}\t{param.numel()}")
            count += param.numel()
            tensors += 1
            group = groups.setdefault(parameter_group(name), [0, 0])
            group[0] += 1
            group[1] += param.numel()
    lines.append("")
    lines += [f"trainable in {group}\t{n} tensors\t{numel}" for group, (n, numel) in groups.items()]
    lines += [f"trainable tensors\t{tensors}", f"trainable parameters\t{count}",
              f"total parameters\t{total}", f"trainable share\t{count / max(total, 1):.6%}"]
    return "\n".join(lines) + "\n"


def write_trainable_report(model: torch.nn.Module, path: Path) -> str:
    report = describe_trainable(model)
    atomic_write_text(path, report)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("Trainable: %s of %s parameters (%s; every tensor in %s)", f"{count:,}", f"{total:,}",
             share(count, total), path.name)
    return report


def share(part: int, whole: int) -> str:
    """A share as a person reads it (``all``, ``all but 512``, ``12.5%``, ``0.031%``), not ``99.999927%``."""
    percent = 100 * part / max(whole, 1)
    if part == whole:
        return "all"
    if percent >= 99.9:
        return f"all but {whole - part:,}"
    return f"{percent:.1f}%" if percent >= 1 else f"{percent:.2g}%"
