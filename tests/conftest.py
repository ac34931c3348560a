"""Shared fixtures: tiny random-weight open_clip models and generated data only (no downloads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wiseft_lab.models.factory import create_clip

ROOT = Path(__file__).resolve().parents[1]
TINY_ARCH = "wiseft-tiny-vit"

os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_bundle():
    """A tiny CLIP with random weights (seeded), its transforms and tokenizer."""
    torch.manual_seed(0)
    return create_clip(TINY_ARCH, pretrained=None)


def run_cli(*overrides: str, cwd: Path, env: dict | None = None, check: bool = True,
            multirun: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m wiseft_lab`` in a subprocess (as a user would), outputs under ``cwd``.

    W&B is offline unless ``env`` says otherwise; a key mapped to None is removed from the environment.
    """
    merged = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env = {k: v for k, v in merged.items() if v is not None}  # env={"X": None} removes X
    cwd.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "wiseft_lab", *(["-m"] if multirun else []), *overrides]
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-4000:]}\n"
                             f"STDERR:\n{proc.stderr[-6000:]}")
    return proc


def only_run_dir(base: Path) -> Path:
    """The single run directory created under ``base`` (outputs/<task>/runs/<timestamp>)."""
    runs = sorted(p.parent for p in base.glob("outputs/*/runs/*/config.yaml"))
    assert len(runs) == 1, f"expected one run dir under {base}, found {runs}"
    return runs[0]
