"""Binding config nodes to their callables before anything runs (torchtune's ``config/_validate.py`` idea).

Every node with a ``_target_`` (methods, merge strategies, optimisers, schedules, data sources, loggers) is checked
against its callable's signature: a key that is not a parameter fails at once, naming the key, the node and the
options that exist, instead of as a ``TypeError`` deep inside a run. The tests run the same check on every preset.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from wiseft_lab.errors import UserFacingError

HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


class ConfigError(UserFacingError, ValueError):
    """A config value the run cannot use; the message names the key and what is allowed."""


def parameters(target: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(get_object(target)).parameters)


def target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """``(dotted path, node)`` of every node with a ``_target_`` under ``node`` (interpolations are not followed)."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node.keys():
            if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
                continue
            yield from target_nodes(node[key], f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            if not OmegaConf.is_interpolation(node, index):
                yield from target_nodes(node[index], f"{path}[{index}]")


def check_node(path: str, node: DictConfig) -> None:
    """Refuse keys of ``node`` that its ``_target_`` does not take (unless it takes ``**kwargs``)."""
    target = str(node._target_)
    try:
        params = parameters(target)
    except Exception as err:  # noqa: BLE001 - any import failure means the same thing to the user
        raise ConfigError(f"{path}._target_={target} cannot be imported: {err}") from err
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in node.keys() if k not in HYDRA_KEYS and k not in params]
    if unknown:
        options = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        raise ConfigError(f"{', '.join(f'{path}.{k}' for k in unknown)}: not an option of {target}; "
                          f"its options: {', '.join(options)}")


def check_targets(cfg: DictConfig) -> None:
    for path, node in target_nodes(cfg):
        check_node(path, node)


def instantiate_checked(node: DictConfig, path: str, **kwargs: Any) -> Any:
    """:func:`hydra.utils.instantiate` after :func:`check_node` on the node and every node below it."""
    for sub_path, sub in target_nodes(node, path):
        check_node(sub_path, sub)
    return instantiate(node, _convert_="all", **kwargs)
