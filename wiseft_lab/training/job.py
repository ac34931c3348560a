"""A fine-tuning job: the ``finetune`` config as a typed method object, what it is run on, and the shared driver.

Every method is a dataclass subclass of :class:`FinetuneMethod`: the fields every method shares (epochs, batch
size, accumulation, clipping, ...) and, as its own fields, the method's options with their types and defaults.
``conf/finetune/<method>.yaml`` instantiates it with ``_target_``, so a misspelt option fails when the config is
bound (and in the tests, which bind every preset), not halfway through a run. The method's ``run(job)`` decides
what is trained on what; :meth:`FinetuneMethod.train` hands the optimisation to the shared
:class:`~wiseft_lab.training.loop.Trainer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.datasets import with_transform
from wiseft_lab.data.workers import worker_context
from wiseft_lab.distributed import World, current, split_batch
from wiseft_lab.models.checkpoint import CheckpointMeta, load_state_dict, save_checkpoint
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.factory import ClipBundle
from wiseft_lab.training.augment import SeededPerExample
from wiseft_lab.training.loop import LoopConfig, Trainer, latest_checkpoint_dir
from wiseft_lab.training.losses import LossFn, cross_entropy_loss
from wiseft_lab.training.trainable import Trainable

log = logging.getLogger(__name__)


@dataclass
class FinetuneJob:
    """What a method is run on; built once by the pipeline."""

    model: ImageClassifier
    bundle: ClipBundle
    train_data: TaskData  # untransformed images: a method sees it through its own transform (:meth:`data`)
    precision: str        # resolved: bf16 | fp32
    seed: int
    optimizer_factory: Callable[..., torch.optim.Optimizer]
    scheduler_factory: Callable[..., Any]
    checkpoint_dir: Path
    meta: CheckpointMeta
    num_workers: int = 0
    resume: bool = False
    feature_cache: Path | None = None
    log_metrics: Callable[[dict, int], None] | None = None

    def data(self, transform: Callable | None) -> TaskData:
        return with_transform(self.train_data, transform)


@dataclass(kw_only=True)
class FinetuneMethod:
    """The ``finetune`` config node. Subclasses register with :func:`~wiseft_lab.training.registry.register_method`.

    Class attributes say what the pipeline must know besides the options: ``trainable`` (the entries trained),
    ``head`` (``linear``, or ``text``: the head is a function of the text tower, which is then kept, and rebuilt
    after every load or merge) and ``caches_features`` (trains on image features cached under
    ``paths.cache_dir/features``).
    """

    name: ClassVar[str] = ""
    trainable: ClassVar[Trainable]
    head: ClassVar[str] = "linear"
    caches_features: ClassVar[bool] = False

    method: str | None = None       # the registered name; choose a method with finetune=<name>
    epochs: int
    batch_size: int = 32            # the global batch (split across ranks); x grad_accum_steps per optimiser step
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = 1.0
    label_smoothing: float = 0.0
    keep_checkpoints: int | None = 1  # per-epoch checkpoints kept (resume needs 1); None keeps all
    checkpoint_every_steps: int | None = None  # also checkpoint mid-epoch every N optimiser steps (pre-emption)
    channels_last: bool = False     # NHWC layout for conv towers (faster on GPUs; the CLIP ResNets)
    compile: bool = False           # torch.compile the training forward pass
    compile_options: dict[str, Any] = field(default_factory=dict)  # its keywords: mode, backend, dynamic, ...
    drop_last: bool = False         # drop an epoch's last partial batch (Dassl's rule, CoOp-family recipes)
    templates: str | list[str] | None = None  # the zero-shot head's prompts (coop: the data set's CoOp prompt)
    keep_text: bool = False         # keep (save, interpolate) the text tower; implied by a text head
    epochs_by_data: dict[str, int] = field(default_factory=dict)  # per-data-set epochs, read by interpolation

    def __post_init__(self) -> None:
        if self.method is None:
            self.method = self.name
        elif self.method != self.name:
            raise ValueError(f"finetune.method={self.method!r} does not match its config's method {self.name!r}: "
                             f"choose a method with finetune=<name>, not finetune.method=<name>.")

    @property
    def keeps_text(self) -> bool:
        return self.keep_text or self.head == "text"

    def run(self, job: FinetuneJob) -> ImageClassifier:
        raise NotImplementedError

    def loop(self, job: FinetuneJob) -> LoopConfig:
        return LoopConfig(epochs=self.epochs, grad_accum_steps=self.grad_accum_steps,
                          clip_grad_norm=self.clip_grad_norm, precision=job.precision, seed=job.seed,
                          keep_checkpoints=self.keep_checkpoints, checkpoint_every_steps=self.checkpoint_every_steps,
                          channels_last=self.channels_last, compile=self.compile,
                          compile_options=dict(self.compile_options))

    def train(self, job: FinetuneJob, module: torch.nn.Module, dataset, *, loss_fn: LossFn | None = None,
              checkpoint_dir: Path | None = None, loop: LoopConfig | None = None,
              optimizer_factory: Callable[..., torch.optim.Optimizer] | None = None,
              scheduler_factory: Callable[..., Any] | None = None,
              before_save: Callable[[], None] | None = None, meta: CheckpointMeta | None = None) -> None:
        """Train ``module`` (the classifier or a part of it) on ``dataset``, checkpointing the whole classifier.

        The keyword arguments default to the job's (cross-entropy, its checkpoint dir, loop, optimiser and
        schedule); ``before_save`` runs before every checkpoint (e.g. to refresh a head derived from the text tower).
        """
        checkpoint_dir = checkpoint_dir or job.checkpoint_dir
        loop = loop or self.loop(job)
        record = meta or job.meta

        def save_model(directory: Path, extra: dict) -> None:
            if before_save is not None:
                before_save()
            save_checkpoint(directory, job.model, record.replace(**extra))

        synchronise_batch_norms(module, next(module.parameters()).device)
        trainer = Trainer(module, module.parameters(), optimizer_factory or job.optimizer_factory,
                          scheduler_factory or job.scheduler_factory,
                          frozen_norms_stay_in_eval(module, loss_fn or cross_entropy_loss(self.label_smoothing)),
                          loop, checkpoint_dir, save_model, job.log_metrics)
        start_epoch = start_step = 0
        if job.resume:
            last = latest_checkpoint_dir(checkpoint_dir)
            if last is None:
                log.warning("resume requested but no finished epoch in %s: starting from scratch", checkpoint_dir)
            else:
                start_epoch, start_step = trainer.resume_from(
                    last, lambda d: job.model.load_state_dict(load_state_dict(d), strict=True))
        pin = trainer.device.type == "cuda"
        make_loader = epoch_loader(dataset, self.batch_size, job.num_workers if module is job.model else 0,
                                   loop.seed, pin, drop_last=self.drop_last)
        if start_epoch < loop.epochs:
            trainer.fit(make_loader, len(make_loader(0)), start_epoch, start_step)


class GlobalBatches(torch.utils.data.Sampler):
    """One epoch's batches: a seeded permutation cut into global batches, each split across the ranks.

    The order is the same on every rank and for any number of ranks (it depends only on the seed and the epoch),
    and a rank takes a contiguous share of each global batch (:func:`wiseft_lab.distributed.split_batch`), so N
    processes see exactly the examples one process sees, step by step. ``drop_last`` drops a last partial batch
    when the set holds at least one full batch (Dassl's rule, which CoOp-family recipes such as CLIPFit train with);
    under N ranks a last batch smaller than N is dropped too (a rank cannot step on no examples).
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, world: World, drop_last: bool = False,
                 first_batch: int = 0):
        self.n, self.batch_size, self.world, self.first_batch = n, batch_size, world, first_batch
        self.seed = seed * 100_003 + epoch
        smallest = world.size if world.distributed else 1
        last = n % batch_size
        self.batches = n // batch_size + (1 if last and last >= smallest and not (drop_last and n >= batch_size)
                                          else 0)

    def __len__(self) -> int:
        return self.batches - self.first_batch

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        for index in range(self.first_batch, self.batches):  # a resumed epoch starts after the batches it did
            yield split_batch(order[index * self.batch_size:(index + 1) * self.batch_size], self.world)


def epoch_loader(dataset, batch_size: int, num_workers: int, seed: int, pin_memory: bool = False,
                 drop_last: bool = False, world: World | None = None):
    """A loader factory whose batches and augmentations depend only on (seed, epoch): resumable, the same whatever
    the number of workers (:class:`~wiseft_lab.training.augment.SeededPerExample`), and split across ranks
    (:class:`GlobalBatches`; ``batch_size`` is the global batch).
    """
    world = world or current()
    if world.distributed and batch_size < world.size:
        raise ValueError(f"finetune.batch_size={batch_size} is the global batch: it must be at least the number "
                         f"of processes ({world.size}).")

    def make(epoch: int, first_batch: int = 0) -> DataLoader:
        sampler = GlobalBatches(len(dataset), batch_size, seed, epoch, world, drop_last, first_batch)
        # the generator only feeds the workers' base seed, drawn otherwise from (and moving) the global generator
        return DataLoader(SeededPerExample(dataset, seed, epoch), batch_sampler=sampler, num_workers=num_workers,
                          pin_memory=pin_memory, persistent_workers=False,
                          generator=torch.Generator().manual_seed(sampler.seed),
                          multiprocessing_context=worker_context(num_workers))
    return make


def training_norms(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    """``(parent, name, layer)`` of every BatchNorm layer with a trainable parameter (it trains its statistics)."""
    return [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm)
            and not isinstance(child, torch.nn.SyncBatchNorm)
            and any(p.requires_grad for p in child.parameters(recurse=False))]


def synchronise_batch_norms(module: torch.nn.Module, device: torch.device, world: World | None = None) -> int:
    """Under N ranks, BatchNorm layers that train compute their statistics over the global batch (SyncBatchNorm),
    as one process does; the layers they replace keep their parameters and running statistics (the same tensors).

    SyncBatchNorm needs GPUs: on CPUs (gloo) each rank normalises its own share, which the log says. Returns the
    number of layers replaced.
    """
    world = world or current()
    norms = training_norms(module) if world.distributed else []
    if not norms:
        return 0
    if device.type != "cuda":
        log.warning("%d BatchNorm layers train their statistics on each rank's share of the batch: SyncBatchNorm "
                    "needs GPUs, so %d CPU ranks do not reach one process's weights exactly.", len(norms), world.size)
        return 0
    for parent, name, norm in norms:
        setattr(parent, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(norm))
    log.info("%d BatchNorm layers synchronised across %d ranks (SyncBatchNorm)", len(norms), world.size)
    return len(norms)


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
