"""State dicts written as the checkpoint directories the streaming readers take (``<dir>/model.safetensors``)."""

from __future__ import annotations

from pathlib import Path

from wiseft_lab.io import write_safetensors


def state_dirs(tmp_path: Path, states) -> list[Path]:
    """``tmp_path/m<i>/model.safetensors`` for the i-th state dict; the directories, in order."""
    paths = []
    for i, state in enumerate(states):
        write_safetensors(tmp_path / f"m{i}" / "model.safetensors", state)
        paths.append(tmp_path / f"m{i}")
    return paths
