"""What differs between the ranks of a data-parallel job (torchrun, Slurm), kept out of the stages.

Every rank runs the same stages on the same config; training steps and evaluation shards meet in collectives
(:mod:`wiseft_lab.distributed`). Rank 0 chooses the run directory (Hydra's timestamp can differ by a second between
ranks) and owns it: only rank 0 writes files there (:mod:`wiseft_lab.io` skips the writes of the other ranks), its
console and its W&B run. The other ranks read rank 0's files after the stage that wrote them (:func:`stage_done`),
log one line that they started and their warnings; the first rank to fail writes the job's ``error.log``
(:func:`wiseft_lab.pipeline.run.record_failure`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from wiseft_lab.distributed import World, barrier, broadcast_object

log = logging.getLogger(__name__)


def scratch_dir(world: World) -> Path:
    """A directory for what Hydra writes on a rank above 0 (its log); the caller removes it."""
    return Path(tempfile.mkdtemp(prefix=f"wiseft-lab-rank{world.rank}-"))


def start_rank(world: World, device: torch.device, run_dir: Path) -> tuple[Path, dict]:
    """Quiet the ranks above 0 and agree on rank 0's run directory; returns it and what run_info records."""
    if not world.distributed:
        return run_dir, {"world_size": 1}
    if not world.is_main:
        for name in ("wiseft_lab", ""):  # ours and the root logger (open_clip's INFO lines)
            logging.getLogger(name).setLevel(logging.WARNING)
        log.warning("rank %d of %d started on %s (rank 0 writes the run directory)", world.rank, world.size, device)
    shared = Path(broadcast_object(str(run_dir)))
    devices: list = [None] * world.size
    dist.all_gather_object(devices, str(device))
    return shared, {"world_size": world.size, "backend": world.backend, "devices": devices}


def stage_done() -> None:
    """Every rank waits here until rank 0 has written what the stage produced (checkpoints the next stage reads)."""
    barrier()
