"""Evaluation suites: a reference test set plus shifted ones, scored by top-1 and averaged over shifts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from wiseft_lab.data.base import TaskData, project_logits
from wiseft_lab.data.cache import PreparedSet, SplitTransform, prepare, split_transform
from wiseft_lab.distributed import current, gather_shards, shard
from wiseft_lab.evaluation.features import FeatureCache, image_tower
from wiseft_lab.evaluation.metrics import average_over, top1
from wiseft_lab.io import write_safetensors
from wiseft_lab.precision import autocast

log = logging.getLogger(__name__)

AVG_SHIFTS = "avg_shifts"
HOLDOUT = "holdout"  # the held-out split a run scores itself on (soups sort and accept by it)


@dataclass
class EvalSuite:
    """Named eval sets; ``reference`` is the in-distribution one, every other set is a shift."""

    reference: str
    sets: dict[str, PreparedSet]

    def __post_init__(self) -> None:
        if self.reference not in self.sets:
            raise ValueError(f"Reference set {self.reference!r} is not among the eval sets {list(self.sets)}.")

    @property
    def shifts(self) -> list[str]:
        return [name for name in self.sets if name != self.reference]

    @classmethod
    def build(
        cls,
        reference: str,
        builders: Mapping[str, Callable[..., TaskData]],
        transform: Callable,
        *,
        cache_keys: Mapping[str, str] | None = None,
        max_cache_bytes: float = 8e9,
        batch_size: int = 256,
        num_workers: int = 0,
        device: torch.device | None = None,
        cache_device: str = "auto",
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
                                 batch_size=batch_size, num_workers=num_workers, device=device,
                                 residence=cache_device)
            if data.expected_size is not None and len(data.dataset) != data.expected_size:
                log.warning("%s has %d examples, the official count is %d: numbers will not be comparable "
                            "with published ones (incomplete copy?).", name, len(data.dataset), data.expected_size)
        return cls(reference, sets)

    @classmethod
    def from_datasets(cls, reference: str, datasets: Mapping[str, TaskData]) -> EvalSuite:
        """A suite over datasets that already yield model-ready tensors (no caching): for notebooks."""
        identity = SplitTransform(lambda x: x, None, None)
        return cls(reference, {n: PreparedSet(n, d, identity) for n, d in datasets.items()})


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
) -> dict[str, float]:
    """Top-1 of ``model`` on every set of ``suite`` plus ``avg_shifts/top1``, and ``n/<set>`` sizes.

    Logits of a head over other classes are projected per set (see :func:`project_logits`). With
    ``predictions_dir`` the projected logits, raw logits and labels are saved per set as safetensors. With
    ``features``, a model whose image tower was seen before is scored on that tower's kept outputs (its head only).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    if features is not None:
        features.bind(model)
    metrics: dict[str, float] = {}
    for name, prepared in suite.sets.items():
        raw, labels = [], []
        for logits, y in _logit_batches(model, name, prepared, batch_size, device, precision, features, progress):
            raw.append(logits.float().cpu())
            labels.append(y)
        # under N ranks each scored every N-th example: gathered back in order, each example counted once
        raw_logits = gather_shards(torch.cat(raw), len(prepared))
        all_labels = gather_shards(torch.cat(labels), len(prepared))
        logits = project_logits(raw_logits, prepared.data)
        metrics[f"{name}/top1"] = top1(logits, all_labels)
        metrics[f"n/{name}"] = len(all_labels)
        if predictions_dir is not None:
            write_safetensors(Path(predictions_dir) / f"{name}.safetensors",
                              {"logits": logits, "raw_logits": raw_logits, "labels": all_labels})
    avg = average_over(metrics, suite.shifts)
    if avg is not None:
        metrics[f"{AVG_SHIFTS}/top1"] = avg
    model.train(was_training)
    return metrics


def _logit_batches(model: nn.Module, name: str, prepared: PreparedSet, batch_size: int, device: torch.device,
                   precision: str, features: FeatureCache | None, progress: bool):
    """``(logits, labels)`` per batch of one set: from kept tower outputs when ``features`` has them."""
    cached = features.get(name) if features is not None else None
    if cached is not None:
        for tower_out, y in cached:
            with autocast(device, precision):
                yield model.head(tower_out), y
        return
    keep = [] if features is not None and image_tower(model) is not None else None
    world = current()
    batches = prepared.batches(batch_size, device, examples=shard(len(prepared), world) if world.distributed else None)
    progress = progress and world.is_main
    if progress:
        batches = tqdm(batches, desc=f"eval {name}", leave=False, unit="batch", total=-(-len(prepared) // batch_size))
    for images, y in batches:
        y = torch.as_tensor(y)
        with autocast(device, precision):
            if keep is None:
                logits = model(images)
            else:  # the same two steps as ImageClassifier.forward, with the tower's output kept
                tower_out = model.image_features(images)
                keep.append((tower_out, y))
                logits = model.head(tower_out)
        yield logits, y
    if keep is not None:
        features.put(name, keep)
