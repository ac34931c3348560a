"""Make every run directory self-describing: resolved config, versions, git commit, seed, command."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from wiseft_lab.io import atomic_write_text, read_json, write_json

PACKAGES = ("wiseft-lab", "torch", "torchvision", "open_clip_torch", "hydra-core", "omegaconf", "wandb",
            "safetensors", "numpy")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(cwd: str | Path | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the source tree (None outside a git checkout, e.g. a wheel install)."""
    root = Path(cwd) if cwd else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def write_run_info(run_dir: Path, resolved_config_yaml: str, seed: int, extra: dict[str, Any]) -> dict[str, Any]:
    info = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "host": socket.gethostname(),
        "seed": seed,
        "versions": package_versions(),
        "git": git_state(),
        **extra,
    }
    atomic_write_text(run_dir / "config.yaml", resolved_config_yaml)
    write_json(run_dir / "run_info.json", info)
    return info


def update_run_info(run_dir: Path, fields: dict[str, Any]) -> None:
    """Add what is learnt during the run (e.g. the images skipped as unreadable) to ``run_info.json``."""
    path = Path(run_dir) / "run_info.json"
    write_json(path, {**(read_json(path) if path.is_file() else {}), **fields})
