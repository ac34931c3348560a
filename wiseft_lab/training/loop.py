"""The optimisation loop shared by every fine-tuning method.

One loop, many methods: a method decides *what* is trained (the parameters), *on what* (a loader per
epoch) and *how it is scored* (the loss); the loop owns steps, schedule, clipping, mixed precision,
progress, per-epoch checkpoints, resume and the non-finite-loss guard.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from wiseft_lab.errors import UserFacingError
from wiseft_lab.io import file_sha256, read_json, write_json, write_safetensors
from wiseft_lab.models.checkpoint import CheckpointError, load_weights
from wiseft_lab.precision import autocast, resolve_precision
from wiseft_lab.training.losses import Batch, LossFn

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RESUMED_BY = "resumed_by.json"      # written into interrupted runs by earlier versions
RESUMED_FROM = "resumed_from.json"  # in a run that continued another: which one (that run is never written to)


class NonFiniteLossError(UserFacingError, RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is left untouched."""


@dataclass
class LoopConfig:
    epochs: int
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = 1.0
    precision: str = "fp32"
    seed: int = 0
    keep_checkpoints: int | None = 1


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into tensors (safetensors) and plain values (JSON): no pickle."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict) -> None:
    """Restore the saved moments and steps; the hyperparameters stay the configured ones (lr, weight decay, ...).

    The saved param groups hold the lr the schedule had set (and the schedule's base lr): restoring them would
    silently keep the interrupted run's values when the config changed them (``resume_allow``).
    """
    configured = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    entries: dict[int, dict] = {}
    for flat, value in [*tensors.items(), *rest["scalars"].items()]:
        index, key = flat.split(".", 1)
        entries.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": entries, "param_groups": rest["param_groups"]})
    for group, values in zip(optimizer.param_groups, configured, strict=True):
        for key in set(group) - set(values) - {"params"}:  # the schedule's initial_lr: recomputed from lr
            del group[key]
        group.update(values)


def latest_epoch_dir(checkpoint_dir: Path) -> Path | None:
    """The newest complete per-epoch checkpoint (its trainer state is written last)."""
    done = sorted(p.parent for p in Path(checkpoint_dir).glob(f"epoch_*/{TRAINER_STATE}"))
    return done[-1] if done else None


def find_interrupted_run(runs_dir: Path, exclude: Path | None = None) -> Path | None:
    """The newest run under ``runs_dir`` with a finished epoch but no fine-tuned model, not continued by another."""
    runs = sorted((p for p in Path(runs_dir).iterdir() if p.is_dir()), reverse=True)
    continued = {Path(read_json(f)["run_dir"]).resolve() for run in runs
                 if (f := run / "checkpoints" / RESUMED_FROM).is_file()}
    for run in runs:
        ckpts = run / "checkpoints"
        finished = (ckpts / "finetuned" / "meta.json").is_file() or (ckpts / RESUMED_BY).is_file()
        if run != exclude and latest_epoch_dir(ckpts) is not None and not finished \
                and run.resolve() not in continued:
            return run
    return None


def record_resumed_from(checkpoint_dir: Path, source_run: Path, epoch_dir: Path) -> None:
    """Record in this run which run it continues, so resume=true does not pick that one up again."""
    write_json(Path(checkpoint_dir) / RESUMED_FROM, {"run_dir": str(source_run), "epoch_dir": str(epoch_dir)})


class Trainer:
    """Runs ``epochs`` over ``loader_for_epoch(epoch)`` and checkpoints after each epoch.

    ``save_model(directory, meta)`` writes the model part of a checkpoint (the method knows how);
    the trainer adds the optimiser state and ``trainer_state.json``, which marks the epoch complete.
    """

    def __init__(
        self,
        model: nn.Module,
        parameters: Iterable[nn.Parameter],
        optimizer_factory: Callable[..., torch.optim.Optimizer],
        scheduler_factory: Callable[..., object],
        loss_fn: LossFn,
        config: LoopConfig,
        checkpoint_dir: str | Path,
        save_model: Callable[[Path, dict], None],
        log_metrics: Callable[[dict, int], None] | None = None,
    ):
        self.model = model
        self.parameters = [p for p in parameters if p.requires_grad]
        if not self.parameters:
            raise ValueError("Nothing to train: the method selected no parameters that require gradients.")
        self.optimizer = optimizer_factory(self.parameters)
        self.scheduler_factory = scheduler_factory
        self.loss_fn = loss_fn
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir)
        self.save_model = save_model
        self.log_metrics = log_metrics or (lambda metrics, step: None)
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(config.precision, self.device)

    def _save_epoch(self, epoch: int, step: int, metrics: dict) -> Path:
        directory = self.checkpoint_dir / f"epoch_{epoch:03d}"
        self.save_model(directory, {"epoch": epoch, "step": step, "metrics": metrics})
        tensors, rest = _optimizer_tensors(self.optimizer)
        optimizer_file = write_safetensors(directory / OPTIMIZER_FILE, tensors)
        write_json(directory / TRAINER_STATE, {"epoch": epoch, "step": step, "optimizer": rest, "metrics": metrics,
                                               "sha256": {OPTIMIZER_FILE: file_sha256(optimizer_file)}})
        keep = self.config.keep_checkpoints
        if keep:
            epochs = sorted(p for p in self.checkpoint_dir.glob("epoch_*") if p.is_dir())
            for old in epochs[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return directory

    def resume_from(self, directory: Path, load_model: Callable[[Path], None]) -> tuple[int, int]:
        """Load model + optimiser state of a per-epoch checkpoint; returns (next epoch, global step)."""
        try:
            state = read_json(directory / TRAINER_STATE)
        except ValueError as err:
            raise CheckpointError(f"{directory / TRAINER_STATE} is not valid JSON ({err}): truncated or corrupt; "
                                  f"delete {directory} to resume from the epoch before (if kept).") from err
        load_model(directory)
        tensors = load_weights(directory / OPTIMIZER_FILE, state.get("sha256", {}).get(OPTIMIZER_FILE),
                               directory / TRAINER_STATE)
        _restore_optimizer(self.optimizer, tensors, state["optimizer"])
        log.info("Resumed from %s (epoch %d done, step %d)", directory, state["epoch"], state["step"])
        return state["epoch"], state["step"]

    def fit(self, loader_for_epoch: Callable[[int], Iterable[Batch]], num_batches: int,
            start_epoch: int = 0, start_step: int = 0) -> dict:
        """Train from ``start_epoch`` to ``config.epochs``; returns the last epoch's mean loss and lr.

        ``num_batches`` is the loader's length; an optimisation step is taken every
        ``grad_accum_steps`` batches and on the last batch of an epoch.
        """
        cfg = self.config
        accum = max(1, cfg.grad_accum_steps)
        total_steps = cfg.epochs * math.ceil(num_batches / accum)
        scheduler = self.scheduler_factory(self.optimizer, total_steps=total_steps)
        step = start_step
        summary: dict = {}
        for epoch in range(start_epoch, cfg.epochs):
            torch.manual_seed(cfg.seed * 100_003 + epoch)  # augmentations (and mixup) in the main process
            random.seed(cfg.seed * 100_003 + epoch)  # timm's RandAugment draws from Python's random
            self.model.train()
            running, seen, started = 0.0, 0, time.perf_counter()
            batches = tqdm(loader_for_epoch(epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                           total=num_batches, dynamic_ncols=True)
            self.optimizer.zero_grad(set_to_none=True)
            lr = scheduler.set_step(step)
            for index, (inputs, labels) in enumerate(batches):
                inputs, labels = inputs.to(self.device, non_blocking=True), labels.to(self.device)
                with autocast(self.device, self.precision):
                    loss = self.loss_fn(self.model, (inputs, labels))
                if not torch.isfinite(loss):
                    last = latest_epoch_dir(self.checkpoint_dir)
                    raise NonFiniteLossError(
                        f"Loss became {loss.item()} at epoch {epoch + 1}, step {step}. The last good checkpoint "
                        f"is {last or 'none (no epoch finished)'}; lower optimizer.lr or use precision=fp32.")
                (loss / accum).backward()
                running += loss.item() * len(labels)
                seen += len(labels)
                if (index + 1) % accum == 0 or index + 1 == num_batches:
                    if cfg.clip_grad_norm:
                        nn.utils.clip_grad_norm_(self.parameters, cfg.clip_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    step += 1
                    self.log_metrics({"train/loss": loss.item(), "train/lr": lr, "train/epoch": epoch}, step)
                    lr = scheduler.set_step(step)
                rate = seen / max(time.perf_counter() - started, 1e-9)
                batches.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
            summary = {"train/epoch_loss": running / max(seen, 1), "train/lr": lr, "train/images_per_s": rate}
            self.log_metrics(summary, step)
            self._save_epoch(epoch + 1, step, summary)
        return summary

