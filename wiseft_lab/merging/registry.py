"""The merge stage's registry (timm style: it knows no strategy; :mod:`wiseft_lab.merging` imports them).

A strategy is a dataclass of its options (``conf/merge/<option>.yaml`` instantiates it with ``_target_``); its
``run(ctx)`` gets a :class:`MergeContext` (the endpoints, the run's model loader, the held-out split) and returns a
:class:`MergeResult`: the models to evaluate as :class:`ModelEntry` items whose weights are produced lazily, one
model at a time, so a sweep never holds more than the models it is combining.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig

from wiseft_lab.data.cache import PreparedSet
from wiseft_lab.distributed import shard
from wiseft_lab.evaluation.features import FeatureCache
from wiseft_lab.evaluation.suite import HOLDOUT, EvalSuite, evaluate
from wiseft_lab.models.checkpoint import StateDict, load_state_dict
from wiseft_lab.models.loader import ModelLoader
from wiseft_lab.registry import Registry
from wiseft_lab.weight_space.fisher import diagonal_fisher


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
class MergeResult:
    """What a strategy made: the entries to evaluate, and the checkpoint whose architecture they share.

    ``template`` is None when the entries share the endpoints' architecture (WiSE-FT); a soup names one of its
    ingredients.
    """

    entries: list[ModelEntry]
    template: Path | None = None
    select_alpha: list[str] = field(default_factory=list)  # rules choosing among the "wiseft" rows, once evaluated


@dataclass
class MergeContext:
    """What a strategy works with; built once by the pipeline and passed down."""

    run_cfg: DictConfig        # the whole composed config
    run_dir: Path
    device: torch.device
    precision: str             # resolved: bf16 | fp32
    zeroshot: Path | None      # the endpoints (given with checkpoints.* or produced by this run)
    finetuned: Path | None
    models: ModelLoader
    holdout: EvalSuite | None  # the held-out split as a one-set suite, or None without one
    eval_batch_size: int = 256
    suite: Callable[[], EvalSuite] | None = None  # the run's eval suite (built on first call)
    train_subset: Callable[[int, int], EvalSuite] | None = None  # (n examples, seed) of the fine-tuning split
    log_metrics: Callable[[dict, int | None], None] = lambda metrics, step=None: None
    # Held-out image-tower outputs, reused while candidates share one tower (soups of lc ingredients).
    features: FeatureCache = field(default_factory=FeatureCache)

    def holdout_set(self) -> PreparedSet | None:
        return self.holdout.sets[HOLDOUT] if self.holdout is not None else None

    def score(self, template: Path, state: StateDict) -> float:
        """Held-out top-1 of ``state`` loaded into the classifier of ``template``'s architecture."""
        if self.holdout is None:
            raise ValueError("No held-out split in this run (data.holdout_fraction is 0).")
        model = self.models.load(self.models.skeleton(template), state)
        metrics = evaluate(model, self.holdout, batch_size=self.eval_batch_size, precision=self.precision,
                           progress=False, features=self.features)
        return metrics[f"{HOLDOUT}/top1"]

    def fisher(self, template: Path, state: StateDict, *, n_examples: int | None = None, train_mode: bool = False,
               seed: int = 0) -> StateDict:
        """The diagonal Fisher of ``state`` (in ``template``'s architecture) on the held-out split, one image at a time.

        The held-out split, not a test set: wise-ft's ``compute_fisher`` runs on its dataset's *test* loader (with
        ``model.train()``); this project never reads a test set to build a model. Eval mode by default (identical
        for a ViT; it avoids per-example BatchNorm statistics), ``train_mode=True`` as the reference.
        """
        if self.holdout is None:
            raise ValueError("The Fisher information needs a held-out split: set data.holdout_fraction (e.g. 0.02).")
        prepared = self.holdout_set()
        total = len(prepared) if n_examples is None else min(int(n_examples), len(prepared))
        mine = shard(total)  # every rank estimates on its share; the sums are all-reduced

        def examples():
            done = 0
            for images, _ in prepared.batches(64, self.device, examples=mine):
                yield from zip(mine[done:done + len(images)], images, strict=True)
                done += len(images)
        return diagonal_fisher(self.models.skeleton(template), state, examples(), seed=int(seed),
                               train_mode=train_mode, precision=self.precision)


@dataclass(kw_only=True)
class MergeStrategy:
    """Base of the strategies: ``kind`` is the registered name (choose a strategy with ``merge=<option>``)."""

    name: ClassVar[str] = ""
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            self.kind = self.name
        elif self.kind != self.name:
            raise ValueError(f"merge.kind={self.kind!r} does not match its config's strategy {self.name!r}: "
                             "choose a strategy with merge=<option>.")

    def run(self, ctx: MergeContext) -> MergeResult:
        raise NotImplementedError


MERGES: Registry[type[MergeStrategy]] = Registry(MergeStrategy, "merge strategy", "merge.kind")

register_merge = MERGES.register  # class decorator: @register_merge("<merge.kind>")
get_merge = MERGES.get
list_merges = MERGES.names


def is_merge(name: str) -> bool:
    return name in MERGES


def cached_loader(path: Path, cache: dict[Path, StateDict]) -> Callable[[], StateDict]:
    """Load a checkpoint's weights once, on first use."""
    def load() -> StateDict:
        if path not in cache:
            cache[path] = load_state_dict(path)
        return cache[path]
    return load
