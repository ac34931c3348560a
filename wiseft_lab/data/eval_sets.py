"""The eval sets an ``eval`` config names: its ``datasets``, the short-form ``shifts`` and the ``corruptions``.

* ``datasets``: ``{name: builder config}`` (``_target_`` + ``_partial_: true``), one set each.
* ``shifts``: ``{name: <folder>}`` or ``{name: {root: <folder>, classnames: {<folder>: <class>}, partial_classes:
  true}}``: a shifted folder of class folders (:func:`wiseft_lab.data.sources.shift_folder`), without writing
  its builder out.
* ``corruptions``: ``{group: {builder: <builder config taking corruption= and severity=>, corruptions: [...],
  severities: [...]}}``: one set ``<group>_<corruption>_<severity>`` per pair, scored together as the column
  ``<group>`` (ImageNet-C's release, or any set corrupted on the fly).

Everything downstream (the layout checks, the class-name match, the suite) sees one flat ``{name: builder}``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wiseft_lab.data.class_match import PARTIAL_OPTION
from wiseft_lab.data.layouts import check_builder
from wiseft_lab.data.sources import shift_folder

SHIFT_FOLDER_OPTIONS = ("root", "classnames", "templates", "expected_size", PARTIAL_OPTION)


@dataclass
class EvalSets:
    """Every eval set of a config as a partial builder, with what identifies it (for the decoded-set cache)."""

    builders: dict[str, Callable] = field(default_factory=dict)
    identities: dict[str, str] = field(default_factory=dict)       # name -> its resolved config, as text
    groups: dict[str, list[str]] = field(default_factory=dict)     # group column -> its member sets
    partial: set[str] = field(default_factory=set)                 # sets that may hold a subset of the classes

    def add(self, name: str, builder: Callable, identity: str) -> None:
        if name in self.builders:
            raise ValueError(f"Two eval sets are named {name!r} (eval.datasets, eval.shifts and eval.corruptions "
                             "share one namespace)")
        self.builders[name], self.identities[name] = builder, identity


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def shift_entry(name: str, entry: Any) -> tuple[functools.partial, bool]:
    """The builder of one ``eval.shifts`` entry (a folder path, or a mapping of shift-folder options) and
    whether it may hold a subset of the head's classes."""
    options = {"root": entry} if isinstance(entry, str) else dict(_plain(entry) or {})
    unknown = sorted(set(options) - set(SHIFT_FOLDER_OPTIONS))
    if "root" not in options or unknown:
        raise ValueError(f"eval.shifts.{name}: give a folder, or a mapping with `root` and any of "
                         f"{', '.join(SHIFT_FOLDER_OPTIONS[1:])}" + (f" (unknown: {unknown})" if unknown else ""))
    partial = bool(options.pop(PARTIAL_OPTION, False))
    return functools.partial(shift_folder, split="test", **options), partial


def eval_sets(eval_cfg: Mapping[str, Any]) -> EvalSets:
    """The flat set list of an ``eval`` config (builders instantiated, nothing built yet)."""
    from hydra.utils import instantiate

    sets = EvalSets(partial=set(eval_cfg.get(PARTIAL_OPTION) or ()))
    for name, node in (eval_cfg.get("datasets") or {}).items():
        sets.add(name, instantiate(node), OmegaConf.to_yaml(node, resolve=True))
    for name, entry in (eval_cfg.get("shifts") or {}).items():
        builder, partial = shift_entry(name, entry)
        sets.add(name, builder, repr(_plain(entry)))
        if partial:
            sets.partial.add(name)
    for group, family in (eval_cfg.get("corruptions") or {}).items():
        builder, identity = instantiate(family.builder), OmegaConf.to_yaml(family.builder, resolve=True)
        members = []
        for corruption in family.corruptions:
            for severity in family.severities:
                member = f"{group}_{corruption}_{severity}"
                sets.add(member, functools.partial(builder, corruption=str(corruption), severity=int(severity)),
                         f"{identity}\n{corruption} {severity}")
                members.append(member)
        if not members:
            raise ValueError(f"eval.corruptions.{group} names no corruption or no severity")
        sets.groups[group] = members
    return sets


def check_data_layouts(cfg: Any, stages: Sequence[str]) -> None:
    """Check the training set (finetune stage) and every eval set (evaluate stage) before anything runs.

    Only builders that define a layout check (the real data sets here) are checked; the synthetic ones and
    unknown builders pass. Raises :class:`~wiseft_lab.data.layouts.DataLayoutError` with the expected path and
    layout.
    """
    from hydra.utils import instantiate

    builders = []
    if "finetune" in stages and cfg.get("data") is not None and cfg.data.get("dataset") is not None:
        builders.append(instantiate(cfg.data.dataset))
    if "evaluate" in stages and cfg.get("eval") is not None:
        builders.extend(eval_sets(cfg.eval).builders.values())
    for builder in builders:
        check_builder(builder)
