"""The GPU protocol: one script, under 5 minutes on one GPU, printing one table (run it whenever a GPU is lent).

(a) evaluation images/s of ViT-B/32 and ViT-B/16 at fp32 and bf16 from eval sets resident on the device
    (``eval.cache_device``), against the model's pure forward rate on ready batches;
(b) 11-alpha WiSE-FT sweeps, end to end (every weight differs) and linear-classifier (head only: one feature pass),
    on a generated set of realistic size;
(c) fine-tuning images/s of the project's Trainer against a minimal loop of the same work;
(d) the reference-style evaluation loop (every JPEG read and decoded again for every alpha, fp32, as wise-ft's
    loop does) for the ratio to (b).
Random weights throughout (nothing is downloaded); the numbers are throughputs, not accuracies.

    python experiments/bench_gpu.py                      # on a GPU machine
    python experiments/bench_gpu.py --device cpu --images 64 --archs wiseft-tiny-vit --train-steps 4   # a dry run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))

import bench_lc_sweep  # noqa: E402  (sibling benchmark: the sweeps)
import bench_train_step  # noqa: E402  (sibling benchmark: the training step)

from wiseft_lab import EvalSuite, evaluate  # noqa: E402
from wiseft_lab.data.base import TaskData  # noqa: E402
from wiseft_lab.data.cache import PreparedSet, cache_device, free_device_memory, split_transform  # noqa: E402
from wiseft_lab.data.sources import image_folder  # noqa: E402
from wiseft_lab.evaluation.features import FeatureCache  # noqa: E402
from wiseft_lab.precision import autocast  # noqa: E402

CLASSES = 10


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resident_suite(bundle, n: int, device: torch.device) -> EvalSuite:
    """``n`` random uint8 images at the model's size, placed where ``eval.cache_device=auto`` puts them."""
    split = split_transform(bundle.preprocess_val)
    size = bundle.model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    labels = torch.arange(n) % CLASSES
    target = cache_device("auto", device, images.numel(), free_device_memory(device))
    data = TaskData(TensorDataset(images, labels), [f"class {i}" for i in range(CLASSES)])
    return EvalSuite("set", {"set": PreparedSet("set", data, split, images.to(target), labels)})


def eval_rates(arch: str, n: int, batch: int, device: torch.device) -> list[tuple[str, float, float]]:
    """(precision, evaluate() images/s, pure forward images/s) for one architecture."""
    zeroshot, _, bundle = bench_lc_sweep.endpoints(arch, device, lc=True)
    suite = resident_suite(bundle, n, device)
    ready = next(suite.sets["set"].batches(batch, device))[0]
    rows = []
    for precision in ("fp32", "bf16"):
        evaluate(zeroshot, suite, batch_size=batch, precision=precision, progress=False)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        evaluate(zeroshot, suite, batch_size=batch, precision=precision, progress=False)
        synchronize(device)
        ours = n / (time.perf_counter() - start)
        with torch.no_grad(), autocast(device, precision):
            zeroshot(ready)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(-(-n // batch)):
                zeroshot(ready)
            synchronize(device)
        pure = (-(-n // batch) * len(ready)) / (time.perf_counter() - start)
        rows.append((precision, ours, pure))
    return rows


def sweep_seconds(arch: str, n: int, batch: int, alphas: int, device: torch.device, lc: bool) -> float:
    zeroshot, finetuned, bundle = bench_lc_sweep.endpoints(arch, device, lc=lc)
    suite = resident_suite(bundle, n, device)
    grid = [i / (alphas - 1) for i in range(alphas)]
    synchronize(device)
    start = time.perf_counter()
    bench_lc_sweep.sweep(zeroshot, finetuned, suite, grid, batch, "bf16", FeatureCache())
    synchronize(device)
    return time.perf_counter() - start


def reference_seconds_per_alpha(arch: str, n: int, batch: int, device: torch.device, workers: int) -> float:
    """One alpha of the reference loop: JPEGs read and decoded from disk, fp32 (the cost every alpha pays)."""
    from PIL import Image

    zeroshot, _, bundle = bench_lc_sweep.endpoints(arch, device, lc=True)
    with tempfile.TemporaryDirectory() as tmp:
        generator = torch.Generator().manual_seed(0)
        for i in range(n):
            folder = Path(tmp) / "test" / f"class_{i % CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (256, 256, 3), dtype=torch.uint8, generator=generator).numpy()
            Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
        data = image_folder("test", bundle.preprocess_val, root=tmp)
        loader = DataLoader(data.dataset, batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda")
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            for images, _ in loader:
                zeroshot(images.to(device, non_blocking=True))
        synchronize(device)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--archs", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    parser.add_argument("--images", type=int, default=10_000, help="eval images per measurement")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--alphas", type=int, default=11)
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=min(16, len(os.sched_getaffinity(0))))
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"# bench_gpu: {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", "",
             "| measurement | ViT | value |", "|---|---|---|"]

    def row(what: str, arch: str, value: str) -> None:
        lines.append(f"| {what} | {arch} | {value} |")
        print(lines[-1], flush=True)

    for arch in args.archs:
        for precision, ours, pure in eval_rates(arch, args.images, args.batch_size, device):
            row(f"(a) eval img/s {precision}, resident set (pure forward)", arch,
                f"{ours:,.0f} ({pure:,.0f}; {ours / pure:.2f}x)")
    arch = args.archs[0]
    e2e = sweep_seconds(arch, args.images, args.batch_size, args.alphas, device, lc=False)
    lc = sweep_seconds(arch, args.images, args.batch_size, args.alphas, device, lc=True)
    row(f"(b) {args.alphas}-alpha sweep, {args.images} images, bf16: e2e / lc", arch, f"{e2e:.1f} s / {lc:.1f} s")
    minimal, ours, _, _ = bench_train_step.measure(arch, args.train_batch, args.train_steps, 3, "bf16", device)
    row(f"(c) fine-tuning img/s bf16, batch {args.train_batch}: Trainer (minimal loop)", arch,
        f"{args.train_batch / ours:,.0f} ({args.train_batch / minimal:,.0f}; {minimal / ours:.2f}x)")
    per_alpha = reference_seconds_per_alpha(arch, args.images, args.batch_size, device, args.workers)
    reference = per_alpha * args.alphas
    row(f"(d) reference loop (re-decode per alpha, fp32, {args.workers} workers): {args.alphas} alphas", arch,
        f"{reference:.1f} s ({per_alpha:.1f} s per alpha, timed once); e2e sweep {reference / e2e:.1f}x faster")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
