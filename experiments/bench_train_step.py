"""Benchmark: the training loop's step against a minimal loop of the same work, measured in one run.

Both fine-tune the same model end to end (AdamW, the warm-up/cosine schedule, gradient clipping, cross-entropy,
the resolved autocast) on the same in-memory batches. The minimal loop is the dozen lines a researcher would
write; the project's :class:`~wiseft_lab.training.loop.Trainer` adds the loader (shuffling, per-example seeded
augmentation), the non-finite guard, the logs and the progress bar. The ratio of the steady-state step times
(the first steps are left out), the loops alternating over rounds, is what to read.

    python experiments/bench_train_step.py --arch ViT-B-32 --batch-size 32 --steps 12 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import functools
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from wiseft_lab import ImageClassifier, build_zeroshot_head
from wiseft_lab.data import synthetic
from wiseft_lab.models.factory import create_clip
from wiseft_lab.precision import autocast, resolve_precision
from wiseft_lab.training.job import epoch_loader
from wiseft_lab.training.loop import LoopConfig, Trainer
from wiseft_lab.training.losses import cross_entropy_loss
from wiseft_lab.training.schedules import WarmupCosine


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def minimal_loop(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], precision: str,
                 total_steps: int) -> list[float]:
    """Seconds per step of the plain loop (batches already on the model's device)."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
    scheduler = WarmupCosine(optimizer, warmup_steps=2, total_steps=total_steps)
    times = []
    model.train()
    for step, (x, y) in enumerate(batches):
        start = time.perf_counter()
        scheduler.set_step(step)
        with autocast(device, precision):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def project_loop(model: nn.Module, dataset: TensorDataset, batch_size: int, precision: str, steps: int) -> list[float]:
    """Seconds per optimiser step of the project's Trainer, from a CPU dataset as a real run loads it."""
    device = next(model.parameters()).device
    times: list[float] = []
    last = [time.perf_counter()]

    def log_metrics(metrics: dict, step: int) -> None:  # called once per optimiser step: time between calls
        if "train/loss" in metrics:
            _synchronize(device)
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, model.parameters(), functools.partial(torch.optim.AdamW, lr=1e-5, weight_decay=0.1),
                          functools.partial(WarmupCosine, warmup_steps=2), cross_entropy_loss(0.0),
                          LoopConfig(epochs=1, clip_grad_norm=1.0, seed=0, precision=precision),
                          Path(tmp), lambda directory, meta: None, log_metrics)
        loader = epoch_loader(dataset, batch_size, num_workers=0, seed=0)
        last[0] = time.perf_counter()
        trainer.fit(loader, steps)
    return times


def measure(arch: str, batch_size: int, steps: int, warmup: int, precision: str, device: torch.device,
            rounds: int) -> tuple[list[float], list[float]]:
    """Median steady-state seconds per step of the minimal loop and of the Trainer, one pair per round.

    The two loops alternate, round after round, so that a load on the machine falls on both; the fastest round of
    each is its least disturbed measurement.
    """
    torch.manual_seed(0)
    bundle = create_clip(arch)
    head = build_zeroshot_head(bundle.model, bundle.tokenizer, synthetic.CLASSNAMES, "simple")
    model = ImageClassifier(bundle.model, head).to(device)
    size = bundle.model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    n = batch_size * steps
    images = torch.randn(n, 3, size, size)
    labels = torch.randint(0, len(synthetic.CLASSNAMES), (n,))
    batches = [(images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device))
               for i in range(0, n, batch_size)]

    def steady(times: list[float]) -> float:
        return sorted(times[warmup:])[len(times[warmup:]) // 2]
    minimal, ours = [], []
    for _ in range(rounds):
        minimal.append(steady(minimal_loop(copy.deepcopy(model), batches, precision, steps)))
        ours.append(steady(project_loop(copy.deepcopy(model), TensorDataset(images, labels), batch_size, precision,
                                        steps)))
    return minimal, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the steady state")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the two loops")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    minimal, ours = measure(args.arch, args.batch_size, args.steps, args.warmup, precision, device, args.rounds)
    print(f"{args.arch} (random weights), batch {args.batch_size}, {precision} on {device}, "
          f"{torch.get_num_threads()} threads; median of steps {args.warmup + 1}-{args.steps} per round, "
          f"{args.rounds} alternating rounds:")
    print("  minimal loop  " + "  ".join(f"{t:6.3f}" for t in minimal) + "  s/step")
    print("  Trainer       " + "  ".join(f"{t:6.3f}" for t in ours) + "  s/step")
    print(f"  ratio of the fastest rounds  {min(ours) / min(minimal):6.3f}x")


if __name__ == "__main__":
    main()
