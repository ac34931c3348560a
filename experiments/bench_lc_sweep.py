"""Benchmark: a linear-classifier WiSE-FT sweep against one pass of image features, measured in one run.

An ``lc`` fine-tune changes only the head, so every alpha shares the zero-shot image tower. The sweep below does
what the evaluate stage does for each alpha (interpolate the two state dicts, load them, score every set) three
ways on the same decoded sets, through the pipeline's own pieces (one interpolation path, loads that copy only
what changed, the evaluate function): the floor (one tower pass over every set, no heads), the sweep with reused
features (``FeatureCache``, the pipeline's path), and the sweep running the tower for every alpha (the path before
it). The ratios are what to read: they hold on a noisy machine where the seconds do not.

    python experiments/bench_lc_sweep.py --arch ViT-B-32 --images-per-class 10 --alphas 11
"""

from __future__ import annotations

import argparse
import copy
import functools
import time

import torch

from wiseft_lab import EvalSuite, ImageClassifier, build_zeroshot_head, evaluate
from wiseft_lab.data import synthetic
from wiseft_lab.data.sources import synthetic_styles
from wiseft_lab.evaluation.features import FeatureCache
from wiseft_lab.models.factory import create_clip
from wiseft_lab.models.loader import CopiedEntries
from wiseft_lab.precision import autocast, resolve_precision
from wiseft_lab.weight_space.interpolate import interpolation_path


def sweep(zeroshot: ImageClassifier, finetuned: ImageClassifier, suite: EvalSuite, alphas: list[float],
          batch_size: int, precision: str, features: FeatureCache | None) -> list[dict]:
    model, loads = copy.deepcopy(zeroshot), CopiedEntries()
    path = interpolation_path(zeroshot.state_dict(), finetuned.state_dict())
    results = []
    for alpha in alphas:
        loads.load(model, path(alpha))
        results.append(evaluate(model, suite, batch_size=batch_size, precision=precision, progress=False,
                                features=features))
    return results


@torch.no_grad()
def feature_pass(model: ImageClassifier, suite: EvalSuite, batch_size: int, precision: str) -> None:
    device = next(model.parameters()).device
    for prepared in suite.sets.values():
        for images, _ in prepared.batches(batch_size, device):
            with autocast(device, precision):
                model.image_features(images)


def endpoints(arch: str, device: torch.device, lc: bool) -> tuple[ImageClassifier, ImageClassifier, object]:
    """A zero-shot classifier (random weights) and a fine-tune of it: the head only (lc), or every weight (e2e)."""
    torch.manual_seed(0)
    bundle = create_clip(arch)
    head = build_zeroshot_head(bundle.model, bundle.tokenizer, synthetic.CLASSNAMES, "simple")
    zeroshot = ImageClassifier(bundle.model, head).to(device).eval()
    finetuned = copy.deepcopy(zeroshot)
    with torch.no_grad():
        for name, value in finetuned.named_parameters():
            if not lc or name.startswith("head."):
                value.add_(1e-3 * torch.randn_like(value))
    return zeroshot, finetuned, bundle


def measure(arch: str, images_per_class: int, n_alphas: int, batch_size: int, precision: str, device: torch.device
            ) -> dict[str, float]:
    """Seconds of the floor, the sweep with reused features, and the sweep running the tower for every alpha."""
    zeroshot, finetuned, bundle = endpoints(arch, device, lc=True)
    builders = {style: functools.partial(synthetic_styles, "test", style=style, n_per_class=images_per_class)
                for style in ("photo", "sketch")}
    suite = EvalSuite.build("photo", builders, bundle.preprocess_val, device=device,
                            cache_keys={style: f"bench-lc-{style}-{images_per_class}" for style in builders})
    alphas = [i / (n_alphas - 1) for i in range(n_alphas)]
    timings = {}
    start = time.perf_counter()
    feature_pass(zeroshot, suite, batch_size, precision)
    timings["one feature pass (floor)"] = time.perf_counter() - start
    start = time.perf_counter()
    reused = sweep(zeroshot, finetuned, suite, alphas, batch_size, precision, FeatureCache())
    timings["sweep, features reused"] = time.perf_counter() - start
    start = time.perf_counter()
    full = sweep(zeroshot, finetuned, suite, alphas, batch_size, precision, None)
    timings["sweep, tower every alpha"] = time.perf_counter() - start
    assert reused == full, "reusing features changed a result"
    timings["images"] = sum(len(s) for s in suite.sets.values())
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--images-per-class", type=int, default=10, help="per set; 10 classes, 2 sets")
    parser.add_argument("--alphas", type=int, default=11)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    timings = measure(args.arch, args.images_per_class, args.alphas, args.batch_size, precision, device)
    n = timings.pop("images")
    floor = timings["one feature pass (floor)"]
    print(f"{args.alphas}-alpha lc sweep, {args.arch} (random weights), {n:.0f} images in 2 sets, {precision} on "
          f"{device}, {torch.get_num_threads()} threads; results identical both ways")
    for mode, seconds in timings.items():
        print(f"  {mode:26s} {seconds:7.2f} s  {seconds / floor:5.2f}x the feature pass")


if __name__ == "__main__":
    main()
