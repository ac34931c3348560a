"""Evaluation suites: a reference test set plus shifted ones, each scored by its own metrics, averaged over shifts.

Every set is scored by the metrics it declares (:mod:`wiseft_lab.evaluation.set_metrics`: top-1 unless it says
otherwise), as ``<set>/<metric>`` with its primary metric first. A *group* of sets (ImageNet-C's corruption x
severity pairs) is one column: ``<group>/<metric>`` is the mean over its corruptions of the mean over their
severities, ``<group>_<corruption>/<metric>`` each corruption's mean. ``avg_shifts`` is the unweighted mean of
each shift column's primary metric, as the papers average them; its key is ``avg_shifts/<metric>`` when every
shift shares that metric (``avg_shifts/top1`` for the ImageNet suite), else ``avg_shifts/primary``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from wiseft_lab.data.base import TaskData, project_logits
from wiseft_lab.data.cache import PreparedSet, SplitTransform, prepare, split_transform
from wiseft_lab.data.corruptions import mean_over_corruptions
from wiseft_lab.distributed import current, gather_shards, shard
from wiseft_lab.evaluation.calibration import Calibration
from wiseft_lab.evaluation.features import FeatureCache, image_tower
from wiseft_lab.evaluation.set_metrics import primary_metric, score_set, set_metrics
from wiseft_lab.io import write_safetensors
from wiseft_lab.precision import autocast

log = logging.getLogger(__name__)

AVG_SHIFTS = "avg_shifts"
HOLDOUT = "holdout"  # the held-out split a run scores itself on (soups sort and accept by it)
MIXED = "primary"   # the avg_shifts metric name when the shifts are scored by different metrics


def score_key(row: Mapping[str, object], column: str) -> str | None:
    """The key of ``column``'s primary score in a result row: its first ``<column>/<metric>`` key (None: absent).
    Rows list a set's primary metric first, so reports and alpha selection read the same score."""
    prefix = f"{column}/"
    return next((k for k in row if k.startswith(prefix)), None)


@dataclass
class EvalSuite:
    """Named eval sets; ``reference`` is the in-distribution one, every other set is a shift."""

    reference: str
    sets: dict[str, PreparedSet]
    groups: dict[str, list[str]] = field(default_factory=dict)   # group column -> its member sets

    def __post_init__(self) -> None:
        if self.reference not in self.sets:
            raise ValueError(f"Reference set {self.reference!r} is not among the eval sets {list(self.sets)}.")
        unknown = sorted({m for members in self.groups.values() for m in members} - set(self.sets))
        if unknown:
            raise ValueError(f"Eval set groups name sets that are not in the suite: {unknown}")

    @property
    def shifts(self) -> list[str]:
        """The shift *columns*: every set but the reference, a group counted once (in place of its first member)."""
        member_of = {m: g for g, members in self.groups.items() for m in members}
        columns: list[str] = []
        for name in self.sets:
            column = member_of.get(name, name)
            if name != self.reference and column not in columns:
                columns.append(column)
        return columns

    def primary(self, column: str) -> str:
        """The metric a column is summarised by: its set's primary metric (a group's: its members', shared)."""
        members = self.groups.get(column, [column])
        found = {primary_metric(self.sets[m].data) for m in members}
        if len(found) != 1:
            raise ValueError(f"The sets of group {column!r} are scored by different metrics: {sorted(found)}")
        return found.pop()

    def average_key(self) -> str | None:
        """``avg_shifts/<metric>`` (``avg_shifts/primary`` when the shifts' metrics differ); None without shifts."""
        metrics = {self.primary(c) for c in self.shifts}
        if not metrics:
            return None
        return f"{AVG_SHIFTS}/{metrics.pop() if len(metrics) == 1 else MIXED}"

    @classmethod
    def build(
        cls,
        reference: str,
        builders: Mapping[str, Callable[..., TaskData]],
        transform: Callable,
        *,
        cache_keys: Mapping[str, str] | None = None,
        max_cache_bytes: float = 8e9,
        num_workers: int = 0,
        device: torch.device | None = None,
        cache_device: str = "auto",
        groups: Mapping[str, list[str]] | None = None,
    ) -> EvalSuite:
        """Build every set with the eval transform's uint8 prefix and cache those that fit in memory.

        ``cache_device`` (``eval.cache_device``: auto | cpu | device) keeps cached sets on ``device`` when it is a
        GPU with room for them (:func:`wiseft_lab.data.cache.cache_device`).

        ``builders[name](transform=...)`` returns the set's :class:`TaskData` (a ``functools.partial`` of a
        data source, as Hydra's ``_partial_`` instantiation gives).
        """
        split = split_transform(transform)
        sets = {}
        for name, builder in builders.items():
            data = builder(transform=split.to_uint8)
            key = cache_keys.get(name) if cache_keys is not None else None
            sets[name] = prepare(name, data, split, cache_key=key, max_bytes=max_cache_bytes,
                                 num_workers=num_workers, device=device, residence=cache_device)
            if data.expected_size is not None and len(data.dataset) != data.expected_size:
                log.warning("%s has %d examples, the official count is %d: numbers will not be comparable "
                            "with published ones (incomplete copy?).", name, len(data.dataset), data.expected_size)
        cached = [p for p in sets.values() if p.cached]
        log.info("Eval sets: %s images%s", ", ".join(f"{n} {len(p)}" for n, p in sets.items()),
                 f" ({len(cached)} kept decoded in memory, {sum(p.cache_bytes for p in cached) / 1e6:.1f} MB)"
                 if cached else "")
        return cls(reference, sets, dict(groups or {}))

    @classmethod
    def from_datasets(cls, reference: str, datasets: Mapping[str, TaskData]) -> EvalSuite:
        """A suite over datasets that already yield model-ready tensors (no caching): for notebooks."""
        identity = SplitTransform(lambda x: x, None, None)
        return cls(reference, {n: PreparedSet(n, d, identity) for n, d in datasets.items()})


def group_scores(suite: EvalSuite, metrics: Mapping[str, float]) -> dict[str, float]:
    """Every group's columns from its members' scores: per corruption over severities, then over corruptions.

    Members without ``extras["corruption"]`` count as corruptions of their own (a plain mean over the members).
    """
    out: dict[str, float] = {}
    for group, members in suite.groups.items():
        for metric in [m for m in set_metrics(suite.sets[members[0]].data) if all(
                f"{n}/{m}" in metrics for n in members)]:
            pairs = {(suite.sets[n].data.extras.get("corruption", n), suite.sets[n].data.extras.get("severity", 0)):
                     metrics[f"{n}/{metric}"] for n in members}
            means = mean_over_corruptions(pairs)
            out[f"{group}/{metric}"] = means.pop("mean")
            out.update({f"{group}_{c}/{metric}": v for c, v in means.items() if c not in members})
    return out


def average_shifts(suite: EvalSuite, metrics: Mapping[str, float]) -> dict[str, float]:
    """``{avg_shifts/<metric>: mean of each shift column's primary metric}`` (``{}`` without shifts)."""
    key = suite.average_key()
    if key is None:
        return {}
    values = [metrics[f"{c}/{suite.primary(c)}"] for c in suite.shifts]
    return {key: sum(values) / len(values)}


@torch.no_grad()
def set_logits(model: nn.Module, prepared: PreparedSet, *, batch_size: int = 256, precision: str = "fp32",
               progress: bool = True, features: FeatureCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw (unprojected, float32, CPU) logits of ``model`` on one set, and its labels; ``model`` in eval mode.

    An output ensemble (a model with ``member_logits``) gives every member's: ``(members, N, classes)``. Under N
    ranks each scores every N-th example and the shards are gathered back in order (each example counted once);
    with ``features`` (bound to the model) a known image tower is not run again.
    """
    device = next(model.parameters()).device
    raw, labels = [], []
    for logits, y in _logit_batches(model, prepared, batch_size, device, precision, features, progress):
        raw.append(logits.float().cpu())
        labels.append(y)
    raw_logits, all_labels = torch.cat(raw, dim=-2), torch.cat(labels)
    if raw_logits.ndim == 3:  # members first: gather along the examples
        return gather_shards(raw_logits.transpose(0, 1).contiguous(), len(prepared)).transpose(0, 1), \
            gather_shards(all_labels, len(prepared))
    return gather_shards(raw_logits, len(prepared)), gather_shards(all_labels, len(prepared))


def projected_logits(raw: torch.Tensor, data: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
    """``(raw, projected)`` logits of a set; an ensemble's members ``(M, N, K)`` are projected one by one and then
    averaged (the reference's order: for ObjectNet the max over each group's classes comes before the mean), its raw
    logits averaged."""
    if raw.ndim == 3:
        return raw.mean(dim=0), torch.stack([project_logits(member, data) for member in raw]).mean(dim=0)
    return raw, project_logits(raw, data)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    suite: EvalSuite,
    *,
    batch_size: int = 256,
    precision: str = "fp32",
    predictions_dir: str | Path | None = None,
    progress: bool = True,
    features: FeatureCache | None = None,
    calibration: Calibration | None = None,
) -> dict[str, float]:
    """Every set's metrics (``<set>/<metric>``, primary first), the groups', ``avg_shifts/...`` and ``n/<set>``.

    Logits of a head over other classes are projected per set (see :func:`project_logits`). With
    ``predictions_dir`` the projected logits, raw logits and labels are saved per set as safetensors. With
    ``features``, a model whose image tower was seen before is scored on that tower's kept outputs (its head only).
    With ``calibration`` every set also gets its ECE / NLL / Brier columns (:meth:`Calibration.columns`).
    """
    was_training = model.training
    model.eval()
    if features is not None:
        features.bind(model)
    metrics: dict[str, float] = {}
    sizes: dict[str, float] = {}
    for name, prepared in suite.sets.items():
        raw_logits, all_labels = set_logits(model, prepared, batch_size=batch_size, precision=precision,
                                            progress=progress, features=features)
        raw_logits, logits = projected_logits(raw_logits, prepared.data)
        metrics.update({f"{name}/{m}": v for m, v in score_set(logits, all_labels, prepared.data).items()})
        sizes[f"n/{name}"] = len(all_labels)
        if calibration is not None:
            metrics.update(calibration.columns(name, logits, all_labels))
        if predictions_dir is not None:
            write_safetensors(Path(predictions_dir) / f"{name}.safetensors",
                              {"logits": logits, "raw_logits": raw_logits, "labels": all_labels})
    metrics.update(group_scores(suite, metrics))
    metrics.update(average_shifts(suite, metrics))
    model.train(was_training)
    return {**metrics, **sizes}


def _logit_batches(model: nn.Module, prepared: PreparedSet, batch_size: int, device: torch.device,
                   precision: str, features: FeatureCache | None, progress: bool):
    """``(logits, labels)`` per batch of one set: from kept tower outputs when ``features`` has them."""
    cached = features.get(prepared.name) if features is not None else None
    if cached is not None:
        for tower_out, y in cached:
            with autocast(device, precision):
                yield model.head(tower_out), y
        return
    keep = [] if features is not None and image_tower(model) is not None else None
    forward = getattr(model, "member_logits", model)  # an output ensemble: every member's logits
    world = current()
    batches = prepared.batches(batch_size, device, examples=shard(len(prepared), world) if world.distributed else None)
    progress = progress and world.is_main
    if progress:
        batches = tqdm(batches, desc=f"eval {prepared.name}", leave=False, unit="batch",  # only on a terminal
                       total=-(-len(prepared) // batch_size), disable=None)
    for images, y in batches:
        y = torch.as_tensor(y)
        with autocast(device, precision):
            if keep is None:
                logits = forward(images)
            else:  # the same two steps as ImageClassifier.forward, with the tower's output kept
                tower_out = model.image_features(images)
                keep.append((tower_out, y))
                logits = model.head(tower_out)
        yield logits, y
    if keep is not None:
        features.put(prepared.name, keep)
