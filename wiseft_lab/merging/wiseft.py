"""WiSE-FT: ``theta(alpha) = (1 - alpha) * theta_zeroshot + alpha * theta_finetuned`` for every alpha; and no merge."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wiseft_lab.merging.registry import (
    MergeContext,
    MergeResult,
    MergeStrategy,
    ModelEntry,
    cached_loader,
    register_merge,
)
from wiseft_lab.models.checkpoint import StateDict
from wiseft_lab.weight_space.interpolate import check_compatible, interpolate

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

    ``extrapolate``: alphas outside [0, 1] are allowed (checked with the config, :mod:`wiseft_lab.validation`).
    """

    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    save_alphas: list[float] = field(default_factory=list)
    extrapolate: bool = False

    def run(self, ctx: MergeContext) -> MergeResult:
        if ctx.zeroshot is None or ctx.finetuned is None:
            raise FileNotFoundError("merge=wiseft needs both endpoints: checkpoints.zeroshot and checkpoints.finetuned "
                                    "(or a finetune stage in this run).")
        cache: dict[Path, StateDict] = {}
        theta_0, theta_1 = cached_loader(ctx.zeroshot, cache), cached_loader(ctx.finetuned, cache)
        check_compatible(theta_0(), theta_1(), names=(str(ctx.zeroshot), str(ctx.finetuned)))
        keep = {float(a) for a in self.save_alphas}
        entries = [ModelEntry("wiseft", alpha, lambda a=alpha: interpolate(theta_0(), theta_1(), a),
                              save_as=f"wiseft_alpha{alpha:g}" if alpha in keep else None)
                   for alpha in (float(a) for a in self.alphas)]
        return MergeResult(entries)
