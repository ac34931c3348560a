"""Fine-tuning methods, in a registry: ``finetune.method`` names one.

A method decides which entries of the classifier are trained and what they are trained on, then hands
the optimisation to :class:`~wiseft_lab.training.loop.Trainer`. Methods register themselves with
``@register_method``. ``e2e`` and ``lc`` live here; CLIPFit, BitFit, LP-FT and FLYP live in their own modules
(imported at the end of this file so that importing the registry registers every method).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
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
from wiseft_lab.precision import autocast
from wiseft_lab.training.augment import with_randaugment
from wiseft_lab.training.loop import LoopConfig, LossFn, Trainer, cross_entropy_loss, latest_epoch_dir

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


class Trainable:
    """A method's trainable set: a function of the classifier that returns parameter names.

    Name predicates (``Trainable.by_name``) cover most methods; rules that need the modules themselves
    ("every LayerNorm of the image tower") select from the model. Calling the rule returns the names.
    """

    def __init__(self, select: Callable[[torch.nn.Module], Iterable[str]]):
        self.select = select

    @classmethod
    def by_name(cls, predicate: Callable[[str], bool]) -> Trainable:
        return cls(lambda model: (name for name, _ in model.named_parameters() if predicate(name)))

    def __call__(self, model: torch.nn.Module) -> set[str]:
        return set(self.select(model))


@dataclass(frozen=True)
class MethodInfo:
    """What the runner must know about a method besides its training function.

    ``head="text"``: the head is a function of the text tower (class prompts encoded by it), so the text
    tower is kept and the head is rebuilt from it after every load or weight-space merge.
    """

    head: str = "linear"  # "linear" | "text"
    needs_text: bool = False
    augments: bool = False  # honours finetune.mixup_alpha / finetune.randaugment
    caches_features: bool = False  # trains a head on image features cached to disk (paths.cache_dir/features)


METHODS: dict[str, Callable[[FinetuneJob], ImageClassifier]] = {}
TRAINABLE: dict[str, Trainable] = {}
METHOD_INFO: dict[str, MethodInfo] = {}


def register_method(name: str, trainable: Trainable | Callable[[str], bool], *, head: str = "linear",
                    needs_text: bool = False, augments: bool = False, caches_features: bool = False):
    """Register ``fn(job) -> ImageClassifier`` under ``name`` with its trainable set.

    ``trainable`` is a :class:`Trainable` or a predicate over parameter names. ``augments``: the method applies
    ``finetune.mixup_alpha`` and ``finetune.randaugment``; the registry refuses them for the other methods rather
    than silently training without them.
    """
    if head not in {"linear", "text"}:
        raise ValueError(f"head must be 'linear' or 'text', not {head!r}")
    rule = trainable if isinstance(trainable, Trainable) else Trainable.by_name(trainable)

    def decorator(fn):
        @functools.wraps(fn)
        def checked(job: FinetuneJob) -> ImageClassifier:
            if not augments:
                asked = [f"finetune.{key}={job.options[key]!r}" for key in ("mixup_alpha", "randaugment")
                         if job.options.get(key)]
                if asked:
                    raise ValueError(f"finetune={name} does not apply {' and '.join(asked)}: mixup and RandAugment "
                                     "are implemented for end-to-end fine-tuning (finetune=e2e, finetune=lpft)")
            return fn(job)

        METHODS[name] = checked
        TRAINABLE[name] = rule
        METHOD_INFO[name] = MethodInfo(head=head, needs_text=needs_text or head == "text", augments=augments,
                                       caches_features=caches_features)
        return fn
    return decorator


def method_info(name: str) -> MethodInfo:
    return METHOD_INFO.get(name, MethodInfo())


def get_method(name: str) -> Callable[[FinetuneJob], ImageClassifier]:
    if name not in METHODS:
        raise KeyError(f"Unknown fine-tuning method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def select_trainable(model: torch.nn.Module, rule: Trainable | Callable[[str], bool]) -> list[str]:
    """Set ``requires_grad`` from a :class:`Trainable` or a name predicate; returns the names in model order."""
    chosen = rule(model) if isinstance(rule, Trainable) else Trainable.by_name(rule)(model)
    unknown = chosen - {name for name, _ in model.named_parameters()}
    if unknown:
        raise KeyError(f"Trainable rule selected names that are not parameters: {sorted(unknown)[:5]}")
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
        if param.requires_grad:
            names.append(name)
    return names


def parameter_group(name: str) -> str:
    """Which part of an :class:`ImageClassifier` a parameter belongs to (for the trainable report)."""
    if name.startswith("clip.visual."):
        return "image tower"
    if name.startswith("head."):
        return "head"
    if name.startswith("clip.") and name != "clip.logit_scale":
        return "text tower"
    return "other"


def describe_trainable(model: torch.nn.Module) -> str:
    """``trainable_parameters.txt``: one ``name numel`` line per trainable tensor, per-part counts, then totals."""
    total = sum(p.numel() for p in model.parameters())
    lines, count, tensors = [], 0, 0
    groups: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            lines.append(f"{name}\t{param.numel()}")
            count += param.numel()
            tensors += 1
            group = groups.setdefault(parameter_group(name), [0, 0])
            group[0] += 1
            group[1] += param.numel()
    lines.append("")
    lines += [f"trainable in {group}\t{n} tensors\t{numel}" for group, (n, numel) in groups.items()]
    lines += [f"trainable tensors\t{tensors}", f"trainable parameters\t{count}",
              f"total parameters\t{total}", f"trainable share\t{count / max(total, 1):.6%}"]
    return "\n".join(lines) + "\n"


def write_trainable_report(model: torch.nn.Module, path: Path) -> str:
    report = describe_trainable(model)
    atomic_write_text(path, report)
    tail = report.strip().splitlines()[-4:]
    log.info("Trainable: %s", "; ".join(line.replace("\t", " ") for line in tail))
    return report


def epoch_loader(dataset, batch_size: int, num_workers: int, seed: int, pin_memory: bool = False,
                 drop_last: bool = False):
    """A loader factory whose shuffling (and worker RNG) depends only on (seed, epoch): resumable.

    ``drop_last`` drops an epoch's last partial batch when the set holds at least one full batch (Dassl's rule,
    which CoOp-family recipes such as CLIPFit train with).
    """
    drop = drop_last and len(dataset) >= batch_size

    def make(epoch: int) -> DataLoader:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                          generator=generator, pin_memory=pin_memory, persistent_workers=False, drop_last=drop)
    return make


def frozen_norms_stay_in_eval(module: torch.nn.Module, loss_fn: LossFn) -> LossFn:
    """Keep BatchNorm layers none of whose parameters train in eval mode, so their running stats stay as they are.

    A frozen ResNet image tower (CLIPFit, BitFit-free layers) is then bit for bit unchanged by training; layers
    with a trainable parameter keep normal train-mode behaviour. A no-op for models without BatchNorm.
    """
    frozen = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              and not any(p.requires_grad for p in m.parameters(recurse=False))]
    if not frozen:
        return loss_fn

    def loss(model: torch.nn.Module, batch) -> torch.Tensor:
        for norm in frozen:
            norm.eval()
        return loss_fn(model, batch)
    return loss


def run_trainer(job: FinetuneJob, module: torch.nn.Module, dataset, *, loss_fn: LossFn | None = None,
                 checkpoint_dir: Path | None = None, loop: LoopConfig | None = None,
                 optimizer_factory: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler_factory: Callable[..., Any] | None = None,
                 before_save: Callable[[], None] | None = None, meta: dict | None = None) -> None:
    """Train ``module`` (the classifier or a part of it) on ``dataset``, checkpointing the whole classifier.

    The keyword arguments default to the job's (cross-entropy, its checkpoint dir, loop, optimiser and
    schedule); ``before_save`` runs before every checkpoint (e.g. to refresh a head derived from the text tower).
    """
    checkpoint_dir = checkpoint_dir or job.checkpoint_dir
    loop = loop or job.loop

    def save_model(directory: Path, extra: dict) -> None:
        if before_save is not None:
            before_save()
        save_checkpoint(directory, job.model, {**(meta or job.meta), **extra})

    trainer = Trainer(module, module.parameters(), optimizer_factory or job.optimizer_factory,
                      scheduler_factory or job.scheduler_factory,
                      frozen_norms_stay_in_eval(module, loss_fn or cross_entropy_loss(job.label_smoothing)),
                      loop, checkpoint_dir, save_model, job.log_metrics)
    start_epoch = start_step = 0
    if job.resume:
        last = latest_epoch_dir(checkpoint_dir)
        if last is None:
            log.warning("resume requested but no finished epoch in %s: starting from scratch", checkpoint_dir)
        else:
            start_epoch, start_step = trainer.resume_from(
                last, lambda d: job.model.load_state_dict(load_state_dict(d), strict=True))
    pin = trainer.device.type == "cuda"
    make_loader = epoch_loader(dataset, job.batch_size, job.num_workers if module is job.model else 0,
                               loop.seed, pin, drop_last=bool(job.options.get("drop_last", False)))
    if start_epoch < loop.epochs:
        trainer.fit(make_loader, len(make_loader(0)), start_epoch, start_step)


def is_image_tower_or_head(name: str) -> bool:
    return name.startswith(("clip.visual.", "head."))


def train_transform(job: FinetuneJob):
    """open_clip's train transform, with RandAugment when ``finetune.randaugment`` names one."""
    return with_randaugment(job.bundle.preprocess_train, job.options.get("randaugment"))


@register_method("e2e", trainable=is_image_tower_or_head, augments=True)
def finetune_end_to_end(job: FinetuneJob) -> ImageClassifier:
    """WiSE-FT's end-to-end fine-tuning: image tower and head, with the train-time augmentation.

    ``finetune.randaugment`` adds RandAugment to the train transform; ``finetune.mixup_alpha`` mixes batches.
    """
    data = job.train_data(transform=train_transform(job))
    loss = cross_entropy_loss(job.label_smoothing, mixup_alpha=float(job.options.get("mixup_alpha") or 0.0))
    run_trainer(job, job.model, data.dataset, loss_fn=loss)
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


@register_method("lc", trainable=lambda name: name.startswith("head."), caches_features=True)
def finetune_linear_classifier(job: FinetuneJob) -> ImageClassifier:
    """WiSE-FT's linear-classifier variant: only the head, on features computed once with eval preprocessing.

    The features are cached on disk (``job.feature_cache``), so sweeps over lc hyperparameters pay for
    the image tower once.
    """
    train_head_on_features(job)
    return job.model


def train_head_on_features(job: FinetuneJob, **trainer_options) -> None:
    """Train ``job.model.head`` on (cached) image features; ``trainer_options`` go to :func:`run_trainer`."""
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
    run_trainer(job, job.model.head, dataset, **trainer_options)


# The other methods register themselves on import (they import this module's registry, hence the late import).
from wiseft_lab.training import bitfit, clipfit, flyp, lpft  # noqa: E402,F401
