"""Old spellings that keep working for now, each with a deprecation warning naming the new one.

- ``_target_`` paths of builders that moved (``wiseft_lab.training.base_to_novel.class_subset`` is
  ``wiseft_lab.data.class_subsets.class_subset``);
- ``finetune``, ``merge`` and ``logger`` nodes written before they had a ``_target_`` (their ``method``, ``kind``
  name the class);
- ``merge.kind=uniform_soup|greedy_soup|learned_soup|fisher`` (now ``kind: soups`` with that recipe);
- the ``experiment=<preset>_smoke`` twins (now ``experiment=<preset> smoke=tiny``).
"""

from __future__ import annotations

import logging
import warnings

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from wiseft_lab.merging.registry import get_merge
from wiseft_lab.pipeline.context import hydra_choice
from wiseft_lab.training.registry import get_method

log = logging.getLogger(__name__)

MOVED_TARGETS = {
    "wiseft_lab.training.base_to_novel.class_subset": "wiseft_lab.data.class_subsets.class_subset",
}
SOUP_KINDS = {"uniform_soup": "uniform", "greedy_soup": "greedy", "learned_soup": "learned", "fisher": "fisher"}
LOGGERS = {"wandb": "wiseft_lab.reporting.loggers.WandbLogger", "none": "wiseft_lab.reporting.loggers.NullLogger"}


def deprecated(message: str) -> None:
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    log.warning("Deprecated: %s", message)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _moved_targets(node, path: str = "") -> None:
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        if isinstance(target, str) and target in MOVED_TARGETS:
            deprecated(f"{path}._target_={target} moved to {MOVED_TARGETS[target]}")
            node._target_ = MOVED_TARGETS[target]
        for key in list(node.keys()):
            if not OmegaConf.is_missing(node, key) and not OmegaConf.is_interpolation(node, key):
                _moved_targets(node[key], f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node):
            _moved_targets(item, f"{path}[{index}]")


def apply_deprecations(cfg: DictConfig) -> DictConfig:
    """Rewrite old spellings in place (with a warning each) so that the rest of the run sees only the new ones."""
    with open_dict(cfg):
        _moved_targets(cfg)
        finetune = cfg.get("finetune")
        if isinstance(finetune, DictConfig) and "_target_" not in finetune and finetune.get("method"):
            finetune._target_ = _qualified(get_method(finetune.method))
            deprecated(f"a finetune config without _target_ (method {finetune.method}): "
                       f"add _target_: {finetune._target_}")
        merge = cfg.get("merge")
        if isinstance(merge, DictConfig) and merge.get("kind") in SOUP_KINDS:
            recipe = SOUP_KINDS[merge.kind]
            deprecated(f"merge.kind={merge.kind}: use merge=soups merge.recipes=[{recipe}] (or merge={merge.kind})")
            merge.kind, merge.recipes = "soups", [recipe]
        if isinstance(merge, DictConfig) and "_target_" not in merge and merge.get("kind"):
            merge._target_ = _qualified(get_merge(merge.kind))
            deprecated(f"a merge config without _target_ (kind {merge.kind}): add _target_: {merge._target_}")
        logger = cfg.get("logger")
        if isinstance(logger, DictConfig) and "_target_" not in logger and logger.get("kind") in LOGGERS:
            kind = logger.pop("kind")
            logger._target_, logger._partial_ = LOGGERS[kind], True
            deprecated(f"logger.kind={kind}: logger configs name their class with _target_ ({LOGGERS[kind]})")
    experiment = hydra_choice("experiment")
    if experiment and (experiment == "smoke" or experiment.endswith("_smoke")):
        preset = "demo" if experiment == "smoke" else experiment[: -len("_smoke")]
        deprecated(f"experiment={experiment}: use experiment={preset} smoke=tiny")
    return cfg
