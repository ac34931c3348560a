"""What differs between the ranks of a data-parallel job (torchrun, Slurm), kept out of the stages.

Every rank runs the same stages on the same config (training steps and evaluation shards meet in collectives,
:mod:`wiseft_lab.distributed`). Rank 0 chooses the run directory (Hydra's timestamp can differ by a second between
ranks) and owns it: its files, checkpoints, console and W&B run. A rank above 0 works in a private scratch
directory that is removed when it ends (it reads back only what it wrote itself: its weights equal rank 0's, as
every rank applies the same all-reduced gradients), logs one line that it started and warnings, and no W&B run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from wiseft_lab.distributed import World, broadcast_object

log = logging.getLogger(__name__)


def scratch_dir(world: World) -> Path:
    """A rank's private working directory (created now; :func:`finish_rank` removes it)."""
    return Path(tempfile.mkdtemp(prefix=f"wiseft-lab-rank{world.rank}-"))


def start_rank(world: World, device: torch.device, run_dir: Path) -> dict:
    """Quiet the ranks above 0, agree on rank 0's run directory; returns what run_info records of the world."""
    if not world.distributed:
        return {"world_size": 1}
    if not world.is_main:
        for name in ("wiseft_lab", ""):  # ours and the root logger (open_clip's INFO lines)
            logging.getLogger(name).setLevel(logging.WARNING)
        log.warning("rank %d of %d started on %s (rank 0 writes the run directory)", world.rank, world.size, device)
    shared = broadcast_object(str(run_dir))
    devices: list = [None] * world.size
    dist.all_gather_object(devices, str(device))
    return {"world_size": world.size, "backend": world.backend, "devices": devices, "run_dir": shared}


def error_log_path(world: World, run_dir: Path, shared_run_dir: str | None) -> Path:
    """Where a failure is recorded: ``error.log`` of the run; a rank above 0 writes ``error.rank<N>.log`` beside
    it (its own scratch directory is removed), or into its scratch directory when it failed before the ranks met."""
    if world.is_main or shared_run_dir is None:
        return run_dir / "error.log"
    return Path(shared_run_dir) / f"error.rank{world.rank}.log"


def finish_rank(world: World, run_dir: Path) -> None:
    if not world.is_main:
        shutil.rmtree(run_dir, ignore_errors=True)
