"""Benchmark: memory and speed of the soups over a pool of ingredients of a mid-size open_clip model.

Writes ``--ingredients`` checkpoints (``model.safetensors`` of an ImageClassifier: random ``--arch`` weights plus
small per-ingredient perturbations), then runs each soup in a fresh process and reports

* peak memory of the soup (peak RSS growth over the process's state before it, which already holds the eval
  model and the decoded held-out images) in units of one model's weights, next to the pool's size;
* for the greedy soup, the wall time of each step against the time of one forward pass over the held-out set
  (a step = stream one ingredient + build the candidate + load it + that forward pass);
* for the learned soup (streaming), the time per optimisation step. ``train_step`` measures, for scale, one plain
  forward/backward pass of the model on one batch (its gradients + activations): a learned-soup step needs that
  plus the merged weights.

Peaks are measured with ``MALLOC_MMAP_THRESHOLD_`` set so that freed memory leaves the RSS at once.

    python experiments/bench_soups.py --arch ViT-B-32 --ingredients 16 --holdout-images 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SOUPS = ("uniform", "uniform_fp64", "greedy", "learned", "learned_per_layer", "fisher", "load_all", "train_step")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1])
    raise KeyError(field)


def _classifier(arch: str, classes: int):
    from wiseft_lab.models.classifier import ImageClassifier
    from wiseft_lab.models.factory import create_clip
    from wiseft_lab.models.zeroshot import ClassificationHead

    torch.manual_seed(0)
    bundle = create_clip(arch, pretrained=None)
    head = ClassificationHead(torch.randn(classes, bundle.model.visual.output_dim) * 0.05, torch.zeros(classes))
    size = bundle.model.visual.image_size
    return ImageClassifier(bundle.model, head).eval(), tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def write_pool(root: Path, arch: str, n: int, classes: int) -> int:
    from wiseft_lab.io import write_json, write_safetensors

    model, _ = _classifier(arch, classes)
    base = model.state_dict()
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        state = {k: v + 1e-3 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                 for k, v in base.items()}
        write_safetensors(root / f"{i:03d}" / "model.safetensors", state)
        write_json(root / f"{i:03d}" / "meta.json", {"arch": arch, "metrics": {"holdout/top1": 0.5 + 0.01 * i}})
    return sum(v.numel() * v.element_size() for v in base.values())


def child(args) -> None:
    """One soup in this (fresh) process; prints a JSON line."""
    from wiseft_lab.weight_space.fisher import diagonal_fisher, fisher_merge
    from wiseft_lab.weight_space.ingredients import load_all
    from wiseft_lab.weight_space.learned import LearnedSoupConfig, learned_soup
    from wiseft_lab.weight_space.soups import greedy_soup, uniform_soup

    torch.set_num_threads(args.threads)
    paths = sorted(p for p in Path(args.pool).iterdir() if p.is_dir())[: args.ingredients]
    model, size = _classifier(args.arch, args.classes)
    g = torch.Generator().manual_seed(2)
    images = torch.randn(args.holdout_images, 3, *size, generator=g)
    labels = torch.randint(0, args.classes, (args.holdout_images,), generator=g)

    @torch.no_grad()
    def forward_pass() -> float:
        correct = 0
        for start in range(0, len(labels), args.batch_size):
            logits = model(images[start:start + args.batch_size])
            correct += (logits.argmax(1) == labels[start:start + args.batch_size]).sum().item()
        return correct / len(labels)

    forward_pass()  # warm-up
    start = time.perf_counter()
    forward_pass()
    forward_s = time.perf_counter() - start

    forwards: list[float] = []

    def score(state) -> float:
        model.load_state_dict(state)
        begin = time.perf_counter()
        accuracy = forward_pass()
        forwards.append(time.perf_counter() - begin)
        return accuracy

    holdout = [0.5 + 0.01 * i for i in range(len(paths))]
    batches = lambda epoch: ((images[s:s + args.batch_size], labels[s:s + args.batch_size])  # noqa: E731
                             for s in range(0, len(labels), args.batch_size))
    steps: list[float] = []
    last = [time.perf_counter()]

    def on_step(_record) -> None:
        now = time.perf_counter()
        steps.append(now - last[0])
        last[0] = now

    with open("/proc/self/clear_refs", "w") as handle:  # peak RSS := current RSS
        handle.write("5")
    before = _status_kb("VmRSS:")
    start = last[0] = time.perf_counter()
    if args.child == "uniform":
        uniform_soup(paths)
    elif args.child == "uniform_fp64":
        uniform_soup(paths, accumulate="fp64")
    elif args.child == "greedy":
        # ge accepts ties, so the soup grows; candidates are built in the scoring model's own tensors
        greedy_soup(paths, holdout, score, accept="ge", on_step=on_step, candidate_into=model.state_dict())
    elif args.child in ("learned", "learned_per_layer"):
        config = LearnedSoupConfig(epochs=1, per_layer=args.child == "learned_per_layer", streaming=True)
        learned_soup(model, paths, batches, config, on_step=on_step)
    elif args.child == "fisher":
        images = torch.cat([x for x, _ in batches(0)])[:args.fisher_examples]
        fisher_merge(paths, lambda i, state: diagonal_fisher(model, state, enumerate(images)))
    elif args.child == "load_all":
        kept = [load_all(p) for p in paths]  # noqa: F841 - what the soups avoid
    elif args.child == "train_step":  # for scale: one plain forward/backward of the model on one batch
        x, y = next(iter(batches(0)))
        torch.nn.functional.cross_entropy(model(x), y).backward()
    wall = time.perf_counter() - start
    print(json.dumps({"soup": args.child, "peak_growth_bytes": (_status_kb("VmHWM:") - before) * 1024,
                      "peak_rss_bytes": _status_kb("VmHWM:") * 1024, "baseline_rss_bytes": before * 1024,
                      "wall_s": wall, "forward_s": forward_s, "steps_s": steps, "forwards_in_steps_s": forwards}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--ingredients", type=int, default=16)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--holdout-images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--fisher-examples", type=int, default=4, help="held-out examples per Fisher estimate")
    parser.add_argument("--soups", default="uniform,uniform_fp64,greedy,learned",
                        help=f"comma-separated, from {','.join(SOUPS)}")
    parser.add_argument("--pool", default=None, help="keep the pool in this directory (re-used when it is not empty)")
    parser.add_argument("--child", choices=SOUPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="soup_bench_") as tmp:
        pool = Path(args.pool or tmp)
        pool.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if any(pool.iterdir()):
            model_bytes = (sorted(p for p in pool.iterdir() if p.is_dir())[0] / "model.safetensors").stat().st_size
        else:
            model_bytes = write_pool(pool, args.arch, args.ingredients, args.classes)
        print(f"{args.ingredients} ingredients of {args.arch} ({model_bytes / 1e6:.1f} MB each, "
              f"{args.ingredients * model_bytes / 1e9:.2f} GB in all) written in {time.perf_counter() - start:.0f} s; "
              f"{args.holdout_images} held-out images, batch {args.batch_size}, {args.threads} threads, CPU\n")
        results = []
        for soup in args.soups.split(","):
            cmd = [sys.executable, __file__, "--child", soup, "--pool", str(pool), "--arch", args.arch,
                   *(f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                     ("ingredients", "classes", "holdout_images", "batch_size", "threads", "fisher_examples"))]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"{soup}: failed\n{proc.stderr[-2000:]}")
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(result)
            growth, peak = result["peak_growth_bytes"], result["peak_rss_bytes"]
            line = (f"{soup:18s} peak memory +{growth / model_bytes:5.2f} models ({growth / 1e6:7.1f} MB; "
                    f"process peak {peak / 1e9:.2f} GB)  wall {result['wall_s']:7.1f} s")
            if soup == "greedy" and result["forwards_in_steps_s"]:
                steps = result["steps_s"][1:]  # step 0 is the start (the best ingredient), not a step
                step, forward = sum(steps) / len(steps), sum(result["forwards_in_steps_s"]) / len(steps)
                line += (f"\n{'':18s} {step:.2f} s per greedy step ({len(steps)} steps) vs {forward:.2f} s for its "
                         f"held-out forward pass: {step / forward:.2f}x (+{step - forward:.2f} s to stream the "
                         f"ingredient and build and load the candidate)")
            if soup.startswith("learned") and result["steps_s"]:
                step = sum(result["steps_s"]) / len(result["steps_s"])
                line += (f"\n{'':18s} {step:.1f} s per optimisation step ({len(result['steps_s'])} steps) vs "
                         f"{result['forward_s']:.2f} s per held-out forward pass")
            print(line, flush=True)
        print(f"\nPool: {args.ingredients} models. Baseline RSS before each soup "
              "(eval model + held-out images + runtime): "
              + ", ".join(f"{r['soup']} {r['baseline_rss_bytes'] / 1e9:.2f} GB" for r in results))


if __name__ == "__main__":
    main()
