"""Benchmark: an alpha sweep with the decoded eval-set cache vs. re-reading the images for every alpha.

Writes a small ImageFolder of JPEGs (from the synthetic benchmark) so that "re-reading" includes real
JPEG decoding, then times ``len(alphas)`` evaluations both ways on the same model.

    python experiments/bench_eval_cache.py --images-per-class 100 --alphas 11 --arch wiseft-tiny-vit
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import torch

from wiseft_lab import EvalSuite, ImageClassifier, build_zeroshot_head, evaluate
from wiseft_lab.data import synthetic
from wiseft_lab.data.cache import clear_memory_cache
from wiseft_lab.data.sources import image_folder
from wiseft_lab.models.factory import create_clip


def write_jpegs(root: Path, per_class: int, size: int) -> None:
    data = synthetic.SyntheticShapes("sketch", "test", per_class, image_size=size)
    for index in range(len(data)):
        image, label = data[index]
        folder = root / "test" / synthetic.CLASSNAMES[label].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{index:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="wiseft-tiny-vit")
    parser.add_argument("--images-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=224, help="stored JPEG size (decode cost)")
    parser.add_argument("--alphas", type=int, default=11)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    bundle = create_clip(args.arch)
    head = build_zeroshot_head(bundle.model, bundle.tokenizer, synthetic.CLASSNAMES, "simple")
    model = ImageClassifier(bundle.model, head).eval()
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images_per_class, args.image_size)
        builder = {"sketch": functools.partial(image_folder, "test", root=tmp)}
        timings = {}
        for mode in ("re-read every alpha", "decoded once (cache)"):
            clear_memory_cache()
            start = time.perf_counter()
            keys = {"sketch": "bench"} if "cache" in mode else None
            suite = EvalSuite.build("sketch", builder, bundle.preprocess_val, cache_keys=keys,
                                    num_workers=args.workers)
            for _ in range(args.alphas):
                evaluate(model, suite, batch_size=args.batch_size, progress=False)
            timings[mode] = time.perf_counter() - start
    n = args.images_per_class * len(synthetic.CLASSNAMES)
    print(f"{args.alphas} evaluations of {n} JPEGs ({args.image_size}px) with {args.arch}, "
          f"{torch.get_num_threads()} threads, {args.workers} workers:")
    for mode, seconds in timings.items():
        print(f"  {mode:24s} {seconds:7.2f} s  ({seconds / args.alphas:.2f} s per alpha)")
    print(f"  speed-up: {timings['re-read every alpha'] / timings['decoded once (cache)']:.1f}x")


if __name__ == "__main__":
    main()
