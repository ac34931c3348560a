"""Wall time of one small multirun under each Hydra launcher and DataLoader worker setting.

What it measures: the same 2-job sweep (``experiment=demo`` shrunk to ``data.n_per_class=100 finetune.epochs=2
merge.alphas=[0,0.5,1]``, ``optimizer.lr=1e-3,2e-3``, W&B disabled) run by ``python -m wiseft_lab -m`` from start
to exit, each combination in its own fresh working and sweep directory under a temporary directory, one after the
other:

- the basic launcher (jobs one after the other in the main process), ``data.num_workers`` = ``eval.num_workers``
  = 0 and 2 (DataLoader workers from the process's own start method, fork on Linux);
- ``hydra/launcher=joblib`` (jobs in loky worker processes, ``n_jobs: 2`` from conf/hydra/launcher/joblib.yaml),
  workers 0 and 2. The plugin always runs joblib's loky backend (its ``backend`` field is overwritten), and loky
  makes ``loky`` the worker process's start method, from which DataLoader workers cannot start;
  ``wiseft_lab.data.workers.worker_context`` then gives the DataLoaders ``fork``. A DataLoader context of
  ``spawn`` or ``forkserver`` alone fails there (the children inherit ``loky`` as start method), but forcing the
  job process's own start method works: the ``spawn`` and ``forkserver`` rows do that through a Hydra callback of
  this file (``ForceStartMethod``, on_job_start), so ``worker_context`` leaves the DataLoaders on that method;
- ``hydra/launcher=submitit_local`` (each job a submitit subprocess, all at once), workers 0 and 2, and workers 0
  with ``threads=1``: loky caps each of its workers at ``cpu_count // n_jobs`` torch threads, submitit's local
  executor caps nothing, so its jobs share the cores with twice the threads.

Each row: launcher, the DataLoader workers' start method, workers, jobs completed of those planned (``sweep.csv``),
torch threads per job (``threads``; ``-``: torch's choice),
the mean job duration (``job.json``), the multirun's wall seconds and exit status. Wall times depend on the machine
and on what else runs on it: say what shared the cores beside the figures.

    python experiments/bench_launchers.py                     # every row
    python experiments/bench_launchers.py --only joblib       # rows whose name contains "joblib"
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

try:
    from hydra.experimental.callback import Callback
except ImportError:  # the benchmark itself only needs hydra inside the runs it starts
    Callback = object

HERE = Path(__file__).resolve().parent
JOB = ["experiment=demo", "data.n_per_class=100", "finetune.epochs=2", "merge.alphas=[0,0.5,1]",
       "logger.mode=disabled"]
SWEEP = ["optimizer.lr=1e-3,2e-3"]
JOBLIB, SUBMITIT_LOCAL = "hydra/launcher=joblib", "hydra/launcher=submitit_local"


class Setting(NamedTuple):
    launcher: str | None        # the launcher override (None: Hydra's basic launcher)
    workers: int                # data.num_workers = eval.num_workers
    method: str | None = None   # the job process's start method, forced (None: the launcher's own)
    threads: int | None = None  # the run's ``threads`` (None: torch's choice)


ROWS: dict[str, Setting] = {
    "basic-w0": Setting(None, 0),
    "basic-w2": Setting(None, 2),
    "joblib-w0": Setting(JOBLIB, 0),
    "joblib-w2-fork": Setting(JOBLIB, 2),
    "submitit_local-w0": Setting(SUBMITIT_LOCAL, 0),
    "submitit_local-w2": Setting(SUBMITIT_LOCAL, 2),
    "submitit_local-w0-threads1": Setting(SUBMITIT_LOCAL, 0, threads=1),
    "joblib-w2-forkserver": Setting(JOBLIB, 2, method="forkserver"),
    "joblib-w2-spawn": Setting(JOBLIB, 2, method="spawn"),
}


class ForceStartMethod(Callback):
    """Hydra callback: make ``method`` the job process's multiprocessing start method before the job runs (so
    DataLoader workers start with it, under loky too)."""

    def __init__(self, method: str):
        self.method = method

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        multiprocessing.set_start_method(self.method, force=True)


def command(setting: Setting, sweep_dir: Path) -> list[str]:
    args = [sys.executable, "-m", "wiseft_lab", "-m", *JOB, *SWEEP, f"data.num_workers={setting.workers}",
            f"eval.num_workers={setting.workers}", f"hydra.sweep.dir={sweep_dir}"]
    if setting.launcher:
        args.append(setting.launcher)
    if setting.threads:
        args.append(f"threads={setting.threads}")
    if setting.method:
        args += ["+hydra.callbacks.start_method._target_=bench_launchers.ForceStartMethod",
                 f"+hydra.callbacks.start_method.method={setting.method}"]
    return args


def started_method(setting: Setting) -> str:
    """The start method the jobs' DataLoader workers use."""
    if setting.workers == 0:
        return "-"
    if setting.method:
        return setting.method
    return "fork (worker_context)" if setting.launcher == JOBLIB else multiprocessing.get_start_method()


def run_row(name: str, base: Path, timeout: float) -> dict[str, Any]:
    setting = ROWS[name]
    cwd = base / name
    cwd.mkdir(parents=True)
    sweep_dir = cwd / "sweep"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
           "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    env.pop("WANDB_MODE", None)  # logger.mode=disabled decides
    start = time.perf_counter()
    with (cwd / "console.log").open("w") as out:
        try:
            args = command(setting, sweep_dir)
            returncode: int | str = subprocess.run(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                   timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            returncode = f"killed after {timeout} s"
    wall = time.perf_counter() - start
    rows = list(csv.DictReader((sweep_dir / "sweep.csv").open())) if (sweep_dir / "sweep.csv").is_file() else []
    durations = [float(r["duration_s"]) for r in rows if r.get("duration_s")]
    console = (cwd / "console.log").read_text(errors="replace")
    return {"row": name, "launcher": (setting.launcher or "basic").split("=")[-1],
            "start method": started_method(setting), "workers": setting.workers,
            "threads": setting.threads or "-",
            "jobs": f"{sum(r['status'] == 'completed' for r in rows)}/{len(SWEEP[0].split(','))}",
            "mean job s": f"{sum(durations) / len(durations):.1f}" if durations else "-",
            "wall s": f"{wall:.1f}", "exit": returncode,
            "note": "'Process' has no attribute 'env'" if "no attribute 'env'" in console else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the rows whose name contains this (e.g. joblib, w2)")
    parser.add_argument("--keep", help="write the runs under this directory (default: a temporary one, removed)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one multirun may take (default 3600)")
    args = parser.parse_args(argv)
    names = [n for n in ROWS if not args.only or args.only in n]
    if not names:
        parser.error(f"--only {args.only}: no row's name contains it; rows: {', '.join(ROWS)}")
    with tempfile.TemporaryDirectory(prefix="bench_launchers_") as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        results = []
        for name in names:
            results.append(run_row(name, base, args.timeout))
            print(" ".join(f"{k}={v}" for k, v in results[-1].items()), flush=True)
    header = list(results[0])
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in results:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    print(f"\n{os.cpu_count()} CPUs; job: {' '.join(JOB + SWEEP)}")
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
