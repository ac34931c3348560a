"""The shared training loop: resume after an interruption, the non-finite-loss guard, accumulation."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from wiseft_lab.io import write_safetensors
from wiseft_lab.training.job import epoch_loader
from wiseft_lab.training.loop import (
    LoopConfig,
    NonFiniteLossError,
    Preempted,
    Trainer,
    latest_checkpoint_dir,
    request_stop,
)
from wiseft_lab.training.losses import cross_entropy_loss
from wiseft_lab.training.schedules import WarmupCosine

DATA = TensorDataset(torch.randn(40, 6, generator=torch.Generator().manual_seed(1)),
                     torch.arange(40) % 3)


class Interrupt(Exception):
    pass


def make_trainer(tmp: Path, epochs: int = 3, accum: int = 1, lr: float = 0.05, stop_at_step: int | None = None,
                 every: int | None = None, loss=None):
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    calls = {"steps": 0}

    def save_model(directory: Path, meta: dict) -> None:
        write_safetensors(directory / "model.safetensors", model.state_dict())

    def log_metrics(metrics: dict, step: int) -> None:
        if "train/loss" in metrics:
            calls["steps"] = step
            if stop_at_step is not None and step == stop_at_step:
                raise Interrupt

    trainer = Trainer(model, model.parameters(), functools.partial(torch.optim.AdamW, lr=lr),
                      functools.partial(WarmupCosine, warmup_steps=2), loss or cross_entropy_loss(0.1),
                      LoopConfig(epochs=epochs, grad_accum_steps=accum, seed=3, checkpoint_every_steps=every), tmp,
                      save_model, log_metrics)
    return trainer, model, calls


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    loader = epoch_loader(DATA, batch_size=8, num_workers=0, seed=3)
    full, full_model, _ = make_trainer(tmp_path / "full")
    full.fit(loader, len(loader(0)))

    broken, _, _ = make_trainer(tmp_path / "resumed", stop_at_step=8)  # 5 steps/epoch: dies in epoch 2
    with pytest.raises(Interrupt):
        broken.fit(loader, len(loader(0)))
    last = latest_checkpoint_dir(tmp_path / "resumed")
    assert last.name == "epoch_001"

    resumed, resumed_model, _ = make_trainer(tmp_path / "resumed")
    start_epoch, start_step = resumed.resume_from(
        last, lambda d: resumed_model.load_state_dict(load_file(d / "model.safetensors")))
    assert (start_epoch, start_step) == (1, 5)
    resumed.fit(loader, len(loader(0)), start_epoch, start_step)
    for key, value in full_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key


def test_a_mid_epoch_checkpoint_resumes_at_the_next_batch_bit_for_bit(tmp_path):
    """Killed in epoch 2, resumed from the step checkpoint: the uninterrupted weights exactly. The loss draws from
    torch's global generator (as mixup does), so the generator state must come back too."""
    def noisy_loss(model, batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1]) * (1 + torch.rand(()))

    loader = epoch_loader(DATA, batch_size=8, num_workers=0, seed=3)
    full, full_model, _ = make_trainer(tmp_path / "full", loss=noisy_loss)
    full.fit(loader, len(loader(0)))

    broken, _, _ = make_trainer(tmp_path / "resumed", stop_at_step=8, every=1, loss=noisy_loss)
    with pytest.raises(Interrupt):  # raised in step 8's log: steps 6 and 7 of epoch 2 were checkpointed
        broken.fit(loader, len(loader(0)))
    last = latest_checkpoint_dir(tmp_path / "resumed")
    assert last.name == "step_00000007" and not (tmp_path / "resumed" / "step_00000006").exists()  # keeps 1

    resumed, resumed_model, _ = make_trainer(tmp_path / "resumed", every=1, loss=noisy_loss)
    assert resumed.resume_from(last, lambda d: resumed_model.load_state_dict(load_file(d / "model.safetensors"))
                               ) == (1, 7)
    resumed.fit(loader, len(loader(0)), 1, 7)
    for key, value in full_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["epoch_003"]  # step checkpoints superseded


def test_a_stop_request_checkpoints_at_the_next_step(tmp_path):
    def stop_after_two_steps(model, batch):
        if calls["steps"] == 2:
            assert request_stop()
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    trainer, _, calls = make_trainer(tmp_path, loss=stop_after_two_steps)
    loader = epoch_loader(DATA, batch_size=8, num_workers=0, seed=3)
    with pytest.raises(Preempted, match="step_00000003"):
        trainer.fit(loader, len(loader(0)))
    assert latest_checkpoint_dir(tmp_path).name == "step_00000003"
    assert not request_stop()  # no training running any more


def test_a_resumed_run_takes_the_configured_lr_and_epochs(tmp_path):
    """The restored optimiser keeps its moments but not the saved lr; the schedule is recomputed for new epochs."""
    loader = epoch_loader(DATA, batch_size=8, num_workers=0, seed=3)
    first, _, _ = make_trainer(tmp_path, epochs=1, lr=0.05)
    first.fit(loader, len(loader(0)))  # 5 steps: the cosine has brought the lr to ~0 by the end
    lrs: list[float] = []
    resumed, model, _ = make_trainer(tmp_path, epochs=3, lr=0.5)
    resumed.log_metrics = lambda metrics, step: lrs.append(metrics["train/lr"]) if "train/loss" in metrics else None
    start = resumed.resume_from(latest_checkpoint_dir(tmp_path), lambda d: model.load_state_dict(
        load_file(d / "model.safetensors")))
    assert resumed.optimizer.param_groups[0]["lr"] == 0.5 and resumed.optimizer.state  # moments restored
    resumed.fit(loader, len(loader(0)), *start)
    expected = WarmupCosine(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5), total_steps=15, warmup_steps=2)
    assert lrs == pytest.approx([0.5 * expected.factor(step) for step in range(5, 15)])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer, model, _ = make_trainer(tmp_path, epochs=2)
    loader = epoch_loader(DATA, batch_size=8, num_workers=0, seed=0)
    trainer.fit(loader, len(loader(0)), 0, 0)  # two good epochs
    good = load_file(tmp_path / "epoch_002" / "model.safetensors")
    trainer.config.epochs = 3
    trainer.loss_fn = lambda m, batch: m(batch[0]).sum() * float("nan")
    with pytest.raises(NonFiniteLossError, match="epoch_002"):
        trainer.fit(loader, len(loader(0)), 2, 10)
    assert torch.equal(load_file(tmp_path / "epoch_002" / "model.safetensors")["weight"], good["weight"])


def test_gradient_accumulation_counts_optimisation_steps(tmp_path):
    trainer, _, calls = make_trainer(tmp_path, epochs=2, accum=2)
    loader = epoch_loader(DATA, batch_size=8, num_workers=0, seed=0)  # 5 batches -> 3 steps per epoch
    trainer.fit(loader, len(loader(0)))
    assert calls["steps"] == 6


class RandomlyAugmented(torch.utils.data.Dataset):
    """Draws from torch, Python and NumPy generators per example, as torchvision crops and timm RandAugment do."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int):
        import random

        import numpy as np
        return torch.tensor([index, torch.rand(()).item(), random.random(), np.random.rand()]), index % 3


@pytest.mark.parametrize("workers", [1, 2])
def test_augmentations_do_not_depend_on_the_number_of_workers(workers):
    def epoch_batches(num_workers: int, epoch: int) -> torch.Tensor:
        return torch.cat([x for x, _ in epoch_loader(RandomlyAugmented(), 4, num_workers, seed=5)(epoch)])

    def by_example(rows: torch.Tensor) -> torch.Tensor:
        return rows[rows[:, 0].argsort()]

    single = epoch_batches(0, epoch=1)
    assert torch.equal(epoch_batches(workers, epoch=1), single)
    other_epoch = by_example(epoch_batches(0, epoch=2))
    assert (other_epoch[:, 1:] != by_example(single)[:, 1:]).all()  # every example draws anew in a new epoch
    before = torch.get_rng_state()
    epoch_batches(0, epoch=1)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is left as it was
