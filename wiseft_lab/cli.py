"""Console entry point ``wiseft-lab`` (and ``python -m wiseft_lab``): Hydra composes ``conf/``."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import wiseft_lab.search  # noqa: F401  (registers the ${draw:...} resolver of random searches)
from wiseft_lab.pipeline.ranks import scratch_dir

log = logging.getLogger("wiseft_lab")


def config_dir() -> str:
    """``conf/`` of a source checkout (editable installs), else the copy packaged into the wheel."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "conf", package / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"wiseft-lab configs not found next to {package} (expected conf/train.yaml)")


def _run_job(cfg: DictConfig) -> None:
    from wiseft_lab.errors import UserFacingError
    from wiseft_lab.pipeline.run import run

    try:
        outputs = run(cfg)
    except UserFacingError:
        # the run has logged the message (it says how to fix the run) and saved the traceback in error.log
        raise SystemExit(1) from None
    if outputs.get("rank", 0) != 0:  # rank 0 reports the run
        return
    lines = [f"Run directory: {outputs['run_dir']}"]
    for key, label in (("summary", "Table"), ("plot", "Plot"), ("results", "Results")):
        if key in outputs:
            lines.append(f"{label}: {outputs[key]}")
    if outputs.get("wandb_url"):  # online
        lines.append(f"W&B run: {outputs['wandb_url']}  (files: {outputs['wandb']})")
    elif outputs.get("wandb"):
        lines.append(f"W&B run: {outputs['wandb']}  (offline runs upload later with `wandb sync <that dir>`)")
    if "summary" in outputs:
        print("\n" + Path(outputs["summary"]).read_text())
    print("\n".join(lines))


_hydra_main = hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")(_run_job)


def main() -> None:
    """Under torchrun, ranks above 0 compose the same config but write nothing of Hydra's into a run directory:
    rank 0 chooses the run directory and owns every file in it (see :mod:`wiseft_lab.pipeline.ranks`)."""
    from wiseft_lab.distributed import world_from_env

    world = world_from_env()
    hydra_scratch = None
    if not world.is_main:  # Hydra's own files (its log) go to a scratch directory, removed afterwards
        hydra_scratch = scratch_dir(world)
        sys.argv += [f"hydra.run.dir={hydra_scratch}", "hydra.output_subdir=null"]
    try:
        _hydra_main()
    finally:
        if hydra_scratch is not None:
            shutil.rmtree(hydra_scratch, ignore_errors=True)
        if world.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


if __name__ == "__main__":
    main()
