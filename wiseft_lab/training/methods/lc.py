"""WiSE-FT's linear-classifier fine-tuning: only the head, on image features computed once and cached."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Subset, TensorDataset
from tqdm.auto import tqdm

from wiseft_lab.data.workers import worker_context
from wiseft_lab.distributed import current, gather_shards, shard
from wiseft_lab.io import write_safetensors
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.precision import autocast
from wiseft_lab.training.job import FinetuneJob, FinetuneMethod
from wiseft_lab.training.registry import register_method
from wiseft_lab.training.trainable import Trainable, is_head

log = logging.getLogger(__name__)


@torch.no_grad()
def image_features(model: ImageClassifier, dataset, batch_size: int, num_workers: int,
                   precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised image features of a whole dataset (the head normalises them itself), on every rank.

    Under N ranks each computes every N-th example's features and the shards are gathered back in order.
    """
    device = next(model.parameters()).device
    model.eval()
    world = current()
    examples = shard(len(dataset), world)
    features, labels = [], []
    loader = DataLoader(Subset(dataset, examples) if world.distributed else dataset, batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, multiprocessing_context=worker_context(num_workers))
    for images, y in tqdm(loader, desc="features", unit="batch", disable=None if world.is_main else True):
        with autocast(device, precision):
            features.append(model.image_features(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    return gather_shards(torch.cat(features), len(dataset)), gather_shards(torch.cat(labels), len(dataset))


def train_head_on_features(method: FinetuneMethod, job: FinetuneJob, **trainer_options) -> None:
    """Train ``job.model.head`` on (cached) image features; ``trainer_options`` go to :meth:`FinetuneMethod.train`.

    Features are computed at the run's precision with the eval transform and cached in ``job.feature_cache``, so a
    sweep over head hyper-parameters pays for the image tower once.
    """
    cache = job.feature_cache
    if cache is not None and cache.is_file():
        stored = load_file(cache)
        features, labels = stored["features"], stored["labels"]
        log.info("Loaded cached train features from %s", cache)
    else:
        data = job.data(job.bundle.preprocess_val)
        features, labels = image_features(job.model, data.dataset, method.batch_size, job.num_workers, job.precision)
        if cache is not None:
            write_safetensors(cache, {"features": features, "labels": labels})
    device = next(job.model.parameters()).device
    dataset = TensorDataset(features.to(device), labels.to(device))
    method.train(job, job.model.head, dataset, **trainer_options)


@register_method("lc")
@dataclass(kw_only=True)
class LinearClassifier(FinetuneMethod):
    """Only the head (weight and bias), on features computed once with eval preprocessing."""

    trainable: ClassVar[Trainable] = Trainable.by_name(is_head)
    caches_features: ClassVar[bool] = True

    def run(self, job: FinetuneJob) -> ImageClassifier:
        train_head_on_features(self, job)
        return job.model
