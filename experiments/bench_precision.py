"""Benchmark: bf16 autocast vs. fp32 on this machine's CPU (or GPU), for the matmul and a CLIP step.

    python experiments/bench_precision.py --arch ViT-B-32 --batch-size 32
"""

from __future__ import annotations

import argparse
import time

import torch

from wiseft_lab.models.factory import create_clip
from wiseft_lab.precision import autocast, resolve_precision


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, threads {torch.get_num_threads()}, precision=auto resolves to "
          f"{resolve_precision('auto', device)}")
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        print(f"  matmul 2048^2 {str(dtype):15s} {1e3 * timed(lambda x=x, y=y: x @ y, 10):8.1f} ms")
    model = create_clip(args.arch, device=device).model
    images = torch.randn(args.batch_size, 3, *model.visual.image_size, device=device)
    for precision in ("fp32", "bf16"):
        def step(precision=precision):
            with autocast(device, precision):
                model.encode_image(images).float().sum().backward()
        print(f"  {args.arch} image fwd+bwd, batch {args.batch_size}, {precision}: "
              f"{timed(step, args.repeats):6.2f} s")


if __name__ == "__main__":
    main()
