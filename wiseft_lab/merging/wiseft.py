"""WiSE-FT: ``theta(alpha) = (1 - alpha) * theta_zeroshot + alpha * theta_finetuned`` for every alpha (optionally
Fisher-weighted, wise-ft's ``--fisher``); and no merge."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from wiseft_lab.evaluation.alpha_selection import rules_by_name
from wiseft_lab.merging.registry import (
    MergeContext,
    MergeResult,
    MergeStrategy,
    ModelEntry,
    cached_loader,
    register_merge,
)
from wiseft_lab.models.checkpoint import StateDict, read_meta
from wiseft_lab.weight_space.fisher import FISHER_FLOOR, fisher_interpolate
from wiseft_lab.weight_space.interpolate import check_compatible, interpolation_path

DEFAULT_ALPHAS = [round(0.1 * i, 1) for i in range(11)]


@register_merge("none")
@dataclass(kw_only=True)
class NoMerge(MergeStrategy):
    """No weight-space combination: the endpoints only."""

    def run(self, ctx: MergeContext) -> MergeResult:
        return MergeResult([])


@register_merge("wiseft")
@dataclass(kw_only=True)
class WiseFT(MergeStrategy):
    """One entry per alpha of ``alphas``; ``save_alphas`` are also written as checkpoints.

    ``fisher=True`` is wise-ft's ``--fisher``: every alpha mixes the endpoints per element with the weights
    ``[(1 - alpha) F_0, alpha F_1]`` (floored at ``fisher_floor``), each endpoint's diagonal Fisher estimated once
    on the held-out split (:meth:`~wiseft_lab.merging.registry.MergeContext.fisher`).
    ``extrapolate``: alphas outside [0, 1] are allowed (checked with the config, :mod:`wiseft_lab.validation`).
    """

    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    save_alphas: list[float] = field(default_factory=list)
    select_alpha: list[str] | str = field(default_factory=list)  # rules (or "all"): a row each beside the oracle
    fisher: bool = False
    fisher_floor: float = FISHER_FLOOR
    fisher_examples: int | None = None  # held-out images per estimate (None: all)
    fisher_train_mode: bool = False     # wise-ft: train mode; eval mode avoids per-example BatchNorm statistics
    fisher_seed: int = 0                # the labels are sampled from the model's softmax
    extrapolate: bool = False

    def run(self, ctx: MergeContext) -> MergeResult:
        if ctx.zeroshot is None or ctx.finetuned is None:
            raise FileNotFoundError("merge=wiseft needs both endpoints: checkpoints.zeroshot and checkpoints.finetuned "
                                    "(or a finetune stage in this run).")
        cache: dict[Path, StateDict] = {}
        theta_0, theta_1 = cached_loader(ctx.zeroshot, cache), cached_loader(ctx.finetuned, cache)
        check_compatible(theta_0(), theta_1(), names=(str(ctx.zeroshot), str(ctx.finetuned)))
        keep = {float(a) for a in self.save_alphas}
        # built on first use, once for every alpha (the equal-entry search is a pass over both endpoints)
        path, extra = functools.cache(lambda: interpolation_path(theta_0(), theta_1())), {}
        if self.fisher:  # rows stay "wiseft" (the curve, Table 1 and alpha selection read them), marked fisher
            path, extra = self._fisher_path(ctx, theta_0(), theta_1()), {"fisher": True}
        entries = [ModelEntry("wiseft", alpha, lambda a=alpha: path()(a), extra=dict(extra),
                              save_as=f"wiseft_alpha{alpha:g}" if alpha in keep else None)
                   for alpha in (float(a) for a in self.alphas)]
        rules = [self.select_alpha] if isinstance(self.select_alpha, str) else list(self.select_alpha)
        rules_by_name(rules)  # an unknown rule fails now, before any evaluation
        return MergeResult(entries, select_alpha=rules)

    def _fisher_path(self, ctx: MergeContext, zeroshot: StateDict, finetuned: StateDict):
        if read_meta(ctx.zeroshot).head == "text":
            raise ValueError("merge.fisher=true needs a linear head (the checkpoints' head is derived from the text "
                             "tower); use merge.fisher=false.")
        options = {"n_examples": None if self.fisher_examples is None else int(self.fisher_examples),
                   "train_mode": bool(self.fisher_train_mode), "seed": int(self.fisher_seed)}
        fishers = (ctx.fisher(ctx.zeroshot, zeroshot, **options), ctx.fisher(ctx.zeroshot, finetuned, **options))
        floor = float(self.fisher_floor)
        return lambda: lambda alpha: fisher_interpolate(zeroshot, finetuned, alpha, fishers, floor=floor)
