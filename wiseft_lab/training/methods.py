"""Fine-tuning methods, in a registry: ``finetune.method`` names one.

A method decides which entries of the classifier are trained and what they are trained on, then hands
the optimisation to :class:`~wiseft_lab.training.loop.Trainer`. Methods register themselves with
``@register_method``; later methods (CLIPFit, BitFit, LP-FT, FLYP) plug in the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from wiseft_lab.data.base import TaskData
from wiseft_lab.io import atomic_write_text, write_safetensors
from wiseft_lab.models.checkpoint import load_state_dict, save_checkpoint
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.factory import ClipBundle
from wiseft_lab.training.loop import LoopConfig, Trainer, autocast, cross_entropy_loss, latest_epoch_dir

log = logging.getLogger(__name__)


@dataclass
class FinetuneJob:
    """Everything a method needs; built by the runner from the composed config."""

    model: ImageClassifier
    bundle: ClipBundle
    train_data: Callable[..., TaskData]  # called with transform=...; the split is already bound
    loop: LoopConfig
    optimizer_factory: Callable[..., torch.optim.Optimizer]
    scheduler_factory: Callable[..., Any]
    checkpoint_dir: Path
    meta: dict
    batch_size: int = 32
    num_workers: int = 0
    label_smoothing: float = 0.0
    resume: bool = False
    feature_cache: Path | None = None
    log_metrics: Callable[[dict, int], None] | None = None
    options: dict = field(default_factory=dict)


METHODS: dict[str, Callable[[FinetuneJob], ImageClassifier]] = {}
TRAINABLE: dict[str, Callable[[str], bool]] = {}


def register_method(name: str, trainable: Callable[[str], bool]):
    """Register ``fn(job) -> ImageClassifier`` under ``name`` with its trainable-entry predicate."""
    def decorator(fn):
        METHODS[name] = fn
        TRAINABLE[name] = trainable
        return fn
    return decorator


def get_method(name: str) -> Callable[[FinetuneJob], ImageClassifier]:
    if name not in METHODS:
        raise KeyError(f"Unknown fine-tuning method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def select_trainable(model: torch.nn.Module, predicate: Callable[[str], bool]) -> list[str]:
    """Set ``requires_grad`` from a name predicate; returns the trainable names in model order."""
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(predicate(name))
        if param.requires_grad:
            names.append(name)
    return names


def describe_trainable(model: torch.nn.Module) -> str:
    """``trainable_parameters.txt``: one ``name numel`` line per trainable tensor, then the totals."""
    total = sum(p.numel() for p in model.parameters())
    lines, count, tensors = [], 0, 0
    for name, param in model.named_parameters():
        if param.requires_grad:
            lines.append(f"{name}\t{param.numel()}")
            count += param.numel()
            tensors += 1
    lines += ["", f"trainable tensors\t{tensors}", f"trainable parameters\t{count}",
              f"total parameters\t{total}", f"trainable share\t{count / max(total, 1):.6%}"]
    return "\n".join(lines) + "\n"


def write_trainable_report(model: torch.nn.Module, path: Path) -> str:
    report = describe_trainable(model)
    atomic_write_text(path, report)
    tail = report.strip().splitlines()[-4:]
    log.info("Trainable: %s", "; ".join(line.replace("\t", " ") for line in tail))
    return report


def epoch_loader(dataset, batch_size: int, num_workers: int, seed: int, pin_memory: bool = False):
    """A loader factory whose shuffling (and worker RNG) depends only on (seed, epoch): resumable."""
    def make(epoch: int) -> DataLoader:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                          generator=generator, pin_memory=pin_memory, persistent_workers=False)
    return make


def _run_trainer(job: FinetuneJob, module: torch.nn.Module, dataset) -> None:
    """Train ``module`` (the classifier or a part of it) on ``dataset``, checkpointing the whole classifier."""
    def save_model(directory: Path, extra: dict) -> None:
        save_checkpoint(directory, job.model, {**job.meta, **extra})

    trainer = Trainer(module, module.parameters(), job.optimizer_factory, job.scheduler_factory,
                      cross_entropy_loss(job.label_smoothing), job.loop, job.checkpoint_dir, save_model,
                      job.log_metrics)
    start_epoch = start_step = 0
    if job.resume:
        last = latest_epoch_dir(job.checkpoint_dir)
        if last is None:
            log.warning("resume requested but no finished epoch in %s: starting from scratch", job.checkpoint_dir)
        else:
            start_epoch, start_step = trainer.resume_from(
                last, lambda d: job.model.load_state_dict(load_state_dict(d), strict=True))
    pin = trainer.device.type == "cuda"
    make_loader = epoch_loader(dataset, job.batch_size, job.num_workers if module is job.model else 0,
                               job.loop.seed, pin)
    if start_epoch < job.loop.epochs:
        trainer.fit(make_loader, len(make_loader(0)), start_epoch, start_step)


def _is_image_tower_or_head(name: str) -> bool:
    return name.startswith(("clip.visual.", "head."))


@register_method("e2e", trainable=_is_image_tower_or_head)
def finetune_end_to_end(job: FinetuneJob) -> ImageClassifier:
    """WiSE-FT's end-to-end fine-tuning: image tower and head, with the train-time augmentation."""
    data = job.train_data(transform=job.bundle.preprocess_train)
    _run_trainer(job, job.model, data.dataset)
    return job.model


@torch.no_grad()
def image_features(model: ImageClassifier, dataset, batch_size: int, num_workers: int,
                   precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised image features of a whole dataset (the head normalises them itself)."""
    device = next(model.parameters()).device
    model.eval()
    features, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for images, y in tqdm(loader, desc="features", unit="batch"):
        with autocast(device, precision):
            features.append(model.image_features(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(features), torch.cat(labels)


@register_method("lc", trainable=lambda name: name.startswith("head."))
def finetune_linear_classifier(job: FinetuneJob) -> ImageClassifier:
    """WiSE-FT's linear-classifier variant: only the head, on features computed once with eval preprocessing.

    The features are cached on disk (``job.feature_cache``), so sweeps over lc hyperparameters pay for
    the image tower once.
    """
    cache = job.feature_cache
    if cache is not None and cache.is_file():
        stored = load_file(cache)
        features, labels = stored["features"], stored["labels"]
        log.info("Loaded cached train features from %s", cache)
    else:
        data = job.train_data(transform=job.bundle.preprocess_val)
        features, labels = image_features(job.model, data.dataset, job.batch_size, job.num_workers,
                                          job.loop.precision if job.loop.precision != "auto" else "fp32")
        if cache is not None:
            write_safetensors(cache, {"features": features, "labels": labels})
    device = next(job.model.parameters()).device
    dataset = TensorDataset(features.to(device), labels.to(device))
    _run_trainer(job, job.model.head, dataset)
    return job.model
