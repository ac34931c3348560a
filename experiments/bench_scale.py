"""Benchmark: fine-tuning and evaluation images/s at 1 and N processes (torch.distributed), measured in one run.

Without ``--worker`` the script launches itself under torchrun for each process count and prints one table; with
it, it is one rank: the project's Trainer on a global batch split across the ranks, then ``evaluate`` sharded over
them, timed on rank 0. Each process gets ``cores / N`` threads, so on a CPU the total compute is the same at every
N: the figures show the overhead of the collectives, not a speed-up (that needs N devices).

    python experiments/bench_scale.py --arch ViT-B-32 --processes 1 2
    python experiments/bench_scale.py --device cuda --processes 1 2 4 8   # a GPU node
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import bench_gpu  # noqa: E402  (the resident eval set)
import bench_lc_sweep  # noqa: E402  (the models)
import bench_train_step  # noqa: E402  (the Trainer run)

from wiseft_lab import distributed, evaluate  # noqa: E402
from wiseft_lab.data import synthetic  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    world = distributed.init(device)
    device = distributed.rank_device(device, world)
    torch.set_num_threads(max(1, args.cores // world.size))
    zeroshot, _, bundle = bench_lc_sweep.endpoints(args.arch, device, lc=True)
    size = bundle.model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    n = args.batch_size * args.steps
    data = torch.utils.data.TensorDataset(torch.randn(n, 3, size, size),
                                          torch.randint(0, len(synthetic.CLASSNAMES), (n,)))
    times = bench_train_step.project_loop(zeroshot, data, args.batch_size, args.precision, args.steps)
    step = sorted(times[1:])[len(times[1:]) // 2]
    suite = bench_gpu.resident_suite(bundle, args.eval_images, device)
    evaluate(zeroshot, suite, batch_size=64, precision=args.precision, progress=False)
    distributed.barrier()
    start = time.perf_counter()
    evaluate(zeroshot, suite, batch_size=64, precision=args.precision, progress=False)
    distributed.barrier()
    seconds = time.perf_counter() - start
    if world.is_main:
        print(json.dumps({"processes": world.size, "train_img_s": args.batch_size / step,
                          "eval_img_s": args.eval_images / seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32, help="global batch")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--eval-images", type=int, default=256)
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    for count in args.processes:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}",
                   __file__, "--worker", *sys.argv[1:]]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    base = rows[0]
    print(f"{args.arch} (random weights), {args.precision} on {args.device}, global batch {args.batch_size}, "
          f"{args.cores} cores shared by the processes")
    print("| processes | fine-tuning img/s | eval img/s |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['processes']} | {row['train_img_s']:.1f} ({row['train_img_s'] / base['train_img_s']:.2f}x) "
              f"| {row['eval_img_s']:.1f} ({row['eval_img_s'] / base['eval_img_s']:.2f}x) |")


if __name__ == "__main__":
    main()
