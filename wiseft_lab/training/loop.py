"""The optimisation loop shared by every fine-tuning method.

One loop, many methods: a method decides *what* is trained (the parameters), *on what* (a loader per
epoch) and *how it is scored* (the loss); the loop owns steps, schedule, clipping, mixed precision,
progress, per-epoch checkpoints, resume and the non-finite-loss guard.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from wiseft_lab.distributed import all_reduce_gradients, all_reduce_sum, current
from wiseft_lab.errors import UserFacingError
from wiseft_lab.io import file_sha256, read_json, remove_tree, write_json, write_safetensors, writes_here
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


class Preempted(UserFacingError, RuntimeError):
    """Training was asked to stop (SIGTERM: a scheduler's pre-emption) and checkpointed at a step boundary."""


_STOP = threading.Event()
_TRAINING = threading.Event()


def request_stop() -> bool:
    """Ask a running :meth:`Trainer.fit` to checkpoint at its next step and stop; False when none is running."""
    if not _TRAINING.is_set():
        return False
    _STOP.set()
    return True


def _stop_agreed(distributed: bool) -> bool:
    """Whether to stop now; under N ranks, whether any rank was asked (signals reach ranks at different steps, and
    all must stop at the same one)."""
    return all_reduce_sum(float(_STOP.is_set())) > 0 if distributed else _STOP.is_set()


@dataclass
class LoopConfig:
    epochs: int
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = 1.0
    precision: str = "fp32"
    seed: int = 0
    keep_checkpoints: int | None = 1
    checkpoint_every_steps: int | None = None  # also mid-epoch (an ImageNet epoch of ViT-L is hours)
    channels_last: bool = False  # NHWC weights and inputs: faster convolutions on GPUs (the CLIP ResNets)
    compile: bool = False        # torch.compile the forward pass (the first steps compile: long runs gain)
    compile_options: dict = field(default_factory=dict)  # torch.compile's keywords (mode, backend, dynamic, ...)


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


def _checkpoint_order(directory: Path) -> tuple[int, int]:
    """Newest last: by optimiser step, an epoch's end after a mid-epoch checkpoint of the same step."""
    return int(read_json(directory / TRAINER_STATE)["step"]), int(directory.name.startswith("epoch_"))


def latest_checkpoint_dir(checkpoint_dir: Path) -> Path | None:
    """The newest complete checkpoint, at an epoch's end (``epoch_*``) or mid-epoch (``step_*``); complete means its
    trainer state, written last, is there."""
    done = [p.parent for pattern in ("epoch_*", "step_*")
            for p in Path(checkpoint_dir).glob(f"{pattern}/{TRAINER_STATE}")]
    return max(done, key=_checkpoint_order) if done else None


def find_interrupted_run(runs_dir: Path, exclude: Path | None = None) -> Path | None:
    """The newest run under ``runs_dir`` with a finished epoch but no fine-tuned model, not continued by another."""
    runs = sorted((p for p in Path(runs_dir).iterdir() if p.is_dir()), reverse=True)
    continued = {Path(read_json(f)["run_dir"]).resolve() for run in runs
                 if (f := run / "checkpoints" / RESUMED_FROM).is_file()}
    for run in runs:
        ckpts = run / "checkpoints"
        finished = (ckpts / "finetuned" / "meta.json").is_file() or (ckpts / RESUMED_BY).is_file()
        if run != exclude and latest_checkpoint_dir(ckpts) is not None and not finished \
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
        self.input_format = torch.channels_last if config.channels_last else torch.preserve_format
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        # the loss sees the compiled wrapper; the model itself (saved, resumed, evaluated) stays as it is
        self.forward_model = torch.compile(model, **config.compile_options) if config.compile else model
        self._resume_partial: dict | None = None  # set by resume_from at a mid-epoch checkpoint

    def _save(self, directory: Path, epoch: int, step: int, metrics: dict, partial: dict | None = None) -> Path:
        """Model, optimiser and trainer state (written last: it marks the checkpoint complete).

        ``partial`` (mid-epoch only): the batches of epoch ``epoch`` already done, the epoch's running loss sums
        and the main process's generator states, so a resumed run continues at the very next batch.
        """
        self.save_model(directory, {"epoch": epoch, "step": step, "metrics": metrics})
        tensors, rest = _optimizer_tensors(self.optimizer)
        if partial is not None:
            tensors["rng.torch"] = torch.get_rng_state()
        optimizer_file = write_safetensors(directory / OPTIMIZER_FILE, tensors)
        state = {"epoch": epoch, "step": step, "optimizer": rest, "metrics": metrics}
        if writes_here():  # the rank that wrote it records its digest
            state["sha256"] = {OPTIMIZER_FILE: file_sha256(optimizer_file)}
        if partial is not None:
            state["partial"] = {**partial, "python_random": random.getstate()}
        write_json(directory / TRAINER_STATE, state)
        return directory

    def _save_epoch(self, epoch: int, step: int, metrics: dict) -> Path:
        directory = self._save(self.checkpoint_dir / f"epoch_{epoch:03d}", epoch, step, metrics)
        for mid_epoch in self.checkpoint_dir.glob("step_*"):  # superseded by the epoch's end
            remove_tree(mid_epoch)
        self._keep_newest("epoch_*")
        return directory

    def _save_step(self, epoch: int, step: int, batches_done: int, running: float, seen: int) -> Path:
        directory = self._save(self.checkpoint_dir / f"step_{step:08d}", epoch, step, {},
                               {"batches_done": batches_done, "running": running, "seen": seen})
        self._keep_newest("step_*")
        return directory

    def _keep_newest(self, pattern: str) -> None:
        keep = self.config.keep_checkpoints
        if keep:
            for old in sorted(p for p in self.checkpoint_dir.glob(pattern) if p.is_dir())[:-keep]:
                remove_tree(old)

    def resume_from(self, directory: Path, load_model: Callable[[Path], None]) -> tuple[int, int]:
        """Load model + optimiser state of a checkpoint; returns (the epoch to run, global step).

        After a mid-epoch checkpoint, :meth:`fit` continues that epoch at its next batch.
        """
        try:
            state = read_json(directory / TRAINER_STATE)
        except ValueError as err:
            raise CheckpointError(f"{directory / TRAINER_STATE} is not valid JSON ({err}): truncated or corrupt; "
                                  f"delete {directory} to resume from the checkpoint before (if kept).") from err
        load_model(directory)
        tensors = load_weights(directory / OPTIMIZER_FILE, state.get("sha256", {}).get(OPTIMIZER_FILE),
                               directory / TRAINER_STATE)
        rng = tensors.pop("rng.torch", None)
        _restore_optimizer(self.optimizer, tensors, state["optimizer"])
        self._resume_partial = None
        if "partial" in state:
            self._resume_partial = {**state["partial"], "torch_rng": rng}
            log.info("Resumed from %s (epoch %d, batch %d, step %d)", directory, state["epoch"] + 1,
                     state["partial"]["batches_done"], state["step"])
        else:
            log.info("Resumed from %s (epoch %d done, step %d)", directory, state["epoch"], state["step"])
        return state["epoch"], state["step"]

    def fit(self, loader_for_epoch: Callable[[int, int], Iterable[Batch]], num_batches: int,
            start_epoch: int = 0, start_step: int = 0) -> dict:
        """Train from ``start_epoch`` to ``config.epochs``; returns the last epoch's mean loss and lr.

        ``loader_for_epoch(epoch, first_batch)`` yields that epoch's batches from ``first_batch`` on;
        ``num_batches`` is an epoch's length; an optimisation step is taken every ``grad_accum_steps`` batches and
        on the last batch of an epoch. With ``checkpoint_every_steps`` a checkpoint is also written mid-epoch, and a
        pre-emption (SIGTERM, :func:`request_stop`) writes one at the next step and stops with :class:`Preempted`.
        """
        _STOP.clear()
        _TRAINING.set()
        try:
            return self._epochs(loader_for_epoch, num_batches, start_epoch, start_step)
        finally:
            _TRAINING.clear()

    def _epochs(self, loader_for_epoch: Callable[[int, int], Iterable[Batch]], num_batches: int, start_epoch: int,
                start_step: int) -> dict:
        cfg = self.config
        accum = max(1, cfg.grad_accum_steps)
        total_steps = cfg.epochs * math.ceil(num_batches / accum)
        scheduler = self.scheduler_factory(self.optimizer, total_steps=total_steps)
        step = start_step
        summary: dict = {}
        world = current()
        every = cfg.checkpoint_every_steps
        for epoch in range(start_epoch, cfg.epochs):
            partial, self._resume_partial = (self._resume_partial if epoch == start_epoch else None), None
            if partial is None:
                torch.manual_seed(cfg.seed * 100_003 + epoch)  # mixup draws in the main process
                random.seed(cfg.seed * 100_003 + epoch)
                first, running, seen = 0, 0.0, 0
            else:  # mid-epoch: the generators and the epoch's loss sums as they were at the checkpoint
                torch.set_rng_state(partial["torch_rng"])
                version, internal, gauss = partial["python_random"]
                random.setstate((version, tuple(internal), gauss))
                first, running, seen = partial["batches_done"], partial["running"], partial["seen"]
            self.model.train()
            started = time.perf_counter()
            batches = tqdm(loader_for_epoch(epoch, first), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                           total=num_batches, initial=first, dynamic_ncols=True,
                           disable=None if world.is_main else True)  # bars only on rank 0's terminal
            self.optimizer.zero_grad(set_to_none=True)
            lr = scheduler.set_step(step)
            for index, (inputs, labels) in enumerate(batches, start=first):
                inputs = inputs.to(self.device, non_blocking=True,
                                   memory_format=self.input_format if inputs.dim() == 4 else torch.preserve_format)
                labels = labels.to(self.device, non_blocking=True)
                with autocast(self.device, self.precision):
                    loss = self.loss_fn(self.forward_model, (inputs, labels))
                # Under N ranks each holds a share of the global batch: weighting its mean loss by that share makes
                # the all-reduced (summed) gradient the global batch's mean gradient, whatever the split.
                n_global = all_reduce_sum(len(labels)) if world.distributed else len(labels)
                (loss * (len(labels) / n_global) / accum).backward()
                value = loss.item()  # the step's one host sync (on a GPU): the guard and the logs share it
                if world.distributed:  # the global batch's loss: every rank takes the same decisions on it
                    value = all_reduce_sum(value * len(labels)) / n_global
                if not math.isfinite(value):
                    last = latest_checkpoint_dir(self.checkpoint_dir)
                    raise NonFiniteLossError(
                        f"Loss became {value} at epoch {epoch + 1}, step {step}. The last good checkpoint "
                        f"is {last or 'none (no epoch finished)'}; lower optimizer.lr or use precision=fp32.")
                running += value * n_global
                seen += n_global
                if (index + 1) % accum == 0 or index + 1 == num_batches:
                    all_reduce_gradients(self.parameters)  # then clipping sees the global norm on every rank
                    if cfg.clip_grad_norm:
                        nn.utils.clip_grad_norm_(self.parameters, cfg.clip_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    step += 1
                    self.log_metrics({"train/loss": value, "train/lr": lr, "train/epoch": epoch + 1}, step)
                    lr = scheduler.set_step(step)
                    stop = _stop_agreed(world.distributed)
                    if index + 1 < num_batches and (stop or (every and step % every == 0)):
                        saved = self._save_step(epoch, step, index + 1, running, seen)
                        if stop:
                            raise Preempted(f"Stopped at step {step} (pre-empted); resume=true continues from "
                                            f"{saved}")
                rate = seen / max(time.perf_counter() - started, 1e-9)
                batches.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
            summary = {"train/epoch_loss": running / max(seen, 1), "train/lr": lr, "train/images_per_s": rate}
            self.log_metrics({**summary, "train/epoch": epoch + 1}, step)
            log.info("epoch %d/%d: loss %.4f, lr %.2e, %.0f images/s", epoch + 1, cfg.epochs,
                     summary["train/epoch_loss"], lr, rate)
            saved = self._save_epoch(epoch + 1, step, summary)
            if _stop_agreed(world.distributed) and epoch + 1 < cfg.epochs:
                raise Preempted(f"Stopped after epoch {epoch + 1} (pre-empted); resume=true continues from {saved}")
        return summary

