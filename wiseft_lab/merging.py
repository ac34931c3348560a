"""The merge stage: named strategies that turn checkpoints into models to evaluate.

``merge.kind`` picks a strategy from :data:`MERGES`. A strategy gets a :class:`MergeContext` (its config, the
endpoints, held-out scorers for any checkpoint's architecture) and returns :class:`ModelEntry` items; weights are
produced lazily, one model at a time, so a sweep never holds more than the models it is combining.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from wiseft_lab.models.checkpoint import load_state_dict
from wiseft_lab.weight_space.interpolate import check_compatible, interpolate

StateDict = dict[str, torch.Tensor]


@dataclass
class ModelEntry:
    """A model to evaluate: its row label, its alpha (if any), and a way to get its weights when needed."""

    model: str
    alpha: float | None
    weights: Callable[[], StateDict] | None  # None for a model that is not one state dict (see ``module``)
    extra: dict[str, Any] = field(default_factory=dict)
    save_as: str | None = None  # checkpoint directory name under <run>/checkpoints, when it should be kept
    # A model that is not one set of weights (an output-space ensemble): evaluated as the module it builds.
    module: Callable[[], torch.nn.Module] | None = None
    tag: str | None = None  # predictions sub-directory; default: ``model`` (``wiseft_<alpha>`` for WiSE-FT)


@dataclass
class MergeContext:
    cfg: DictConfig
    zeroshot: Path | None
    finetuned: Path | None
    run_dir: Path
    device: torch.device
    log_metrics: Callable[[dict, int | None], None] = lambda metrics, step=None: None
    # For merges of checkpoints other than the endpoints (soups). A merge that has no endpoint sets
    # ``template``: the checkpoint whose architecture and metadata its models share.
    template: Path | None = None
    run_cfg: DictConfig | None = None  # the whole composed config
    precision: str = "fp32"
    scorer_for: Callable[[Path], Callable[[StateDict], float]] | None = None  # held-out scorer, any template
    skeleton: Callable[[Path], torch.nn.Module] | None = None  # the (shared) model of a template's architecture
    holdout: Callable[[], Any] | None = None  # the held-out split (a PreparedSet), or None without one


MERGES: dict[str, Callable[[MergeContext], list[ModelEntry]]] = {}


def register_merge(kind: str):
    def decorator(fn):
        MERGES[kind] = fn
        return fn
    return decorator


def get_merge(kind: str) -> Callable[[MergeContext], list[ModelEntry]]:
    if kind not in MERGES:
        raise KeyError(f"Unknown merge.kind {kind!r}; known: {sorted(MERGES)}")
    return MERGES[kind]


def cached_loader(path: Path, cache: dict[Path, StateDict]) -> Callable[[], StateDict]:
    """Load a checkpoint's weights once, on first use."""
    def load() -> StateDict:
        if path not in cache:
            cache[path] = load_state_dict(path)
        return cache[path]
    return load


@register_merge("none")
def no_merge(ctx: MergeContext) -> list[ModelEntry]:
    return []


@register_merge("wiseft")
def wiseft_sweep(ctx: MergeContext) -> list[ModelEntry]:
    """One entry per ``merge.alphas``; ``merge.save_alphas`` are also written as checkpoints."""
    if ctx.zeroshot is None or ctx.finetuned is None:
        raise FileNotFoundError("merge=wiseft needs both endpoints: checkpoints.zeroshot and checkpoints.finetuned "
                                "(or a finetune stage in this run).")
    cache: dict[Path, StateDict] = {}
    theta_0, theta_1 = cached_loader(ctx.zeroshot, cache), cached_loader(ctx.finetuned, cache)
    check_compatible(theta_0(), theta_1(), names=(str(ctx.zeroshot), str(ctx.finetuned)))
    keep = {float(a) for a in ctx.cfg.get("save_alphas") or []}
    entries = []
    for alpha in (float(a) for a in ctx.cfg.alphas):
        entries.append(ModelEntry("wiseft", alpha, lambda a=alpha: interpolate(theta_0(), theta_1(), a),
                                  save_as=f"wiseft_alpha{alpha:g}" if alpha in keep else None))
    return entries


import wiseft_lab.soups  # noqa: E402, F401  (registers the soup merges)
