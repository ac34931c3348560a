"""A fake Hugging Face hub cache, laid out as huggingface_hub writes it after a download (no network needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_hf_cache(cache: Path, repo_id: str, files: list[Path], absent: tuple[str, ...] = ()) -> Path:
    """Put ``files`` in ``cache`` as the snapshot of ``repo_id``'s ``main``; ``absent``: files the hub lacked
    (huggingface_hub records them under ``.no_exist/<commit>/`` so that offline look-ups know not to expect them)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for file in files:
        shutil.copy(file, snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / ".no_exist" / COMMIT).mkdir(parents=True)
    for name in absent:
        (repo / ".no_exist" / COMMIT / name).touch()
    return snapshot
