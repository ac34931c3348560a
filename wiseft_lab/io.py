"""Crash-safe file writing: every artifact is written to a temporary file, then renamed into place.

In a data-parallel job only rank 0 writes (and removes) files: the other ranks compute the same artifacts and
read rank 0's after the stage that wrote them (:mod:`wiseft_lab.pipeline.ranks`). ``every_rank=True`` is for the
exceptions: a job's error log (whichever rank fails first writes it) and the run lock's staging file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from wiseft_lab.distributed import current


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be queried by setting it


def _temporary_sibling(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def writes_here(every_rank: bool = False) -> bool:
    """Whether this process writes files: always in one process; rank 0 only in a distributed job."""
    return every_rank or current().is_main


def remove_tree(path: str | Path) -> None:
    """Delete a directory (an outdated checkpoint) where this process owns the files."""
    if writes_here():
        shutil.rmtree(path, ignore_errors=True)


def _atomic_write(path: str | Path, write: Callable[[str], None], every_rank: bool = False) -> Path:
    """``write(tmp)`` fills a temporary sibling, which is synced and renamed over ``path``: never half a file.

    The file gets the umask's mode after ``write`` (mkstemp makes it 0600, and safetensors replaces the file with
    its own 0600 one), so colleagues read checkpoints as they read every other file of a run.
    """
    path = Path(path)
    if not writes_here(every_rank):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, every_rank: bool = False) -> Path:
    """Write ``data`` so that ``path`` is either the old file or the complete new one."""
    return _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), every_rank)


def atomic_write_text(path: str | Path, text: str, every_rank: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), every_rank)


def create_exclusive(path: str | Path, text: str) -> bool:
    """Put a complete file at ``path`` unless one is there: the first of several processes wins (a hard link never
    replaces a file). Every rank may call it; False when a file was there first."""
    path = Path(path)
    staged = atomic_write_text(path.parent / f".{path.name}.{os.getpid()}", text, every_rank=True)
    try:
        os.link(staged, path)
    except FileExistsError:
        return False
    finally:
        staged.unlink(missing_ok=True)
    return True


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def file_sha256(path: str | Path) -> str:
    """The file's sha256 (hex), read in chunks (never the whole file in memory)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(dict(r), default=str) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def union_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The union of the rows' keys in first-seen order: the columns of a table of heterogeneous rows."""
    return list(dict.fromkeys(key for row in rows for key in row))


def write_csv(path: str | Path, rows: list[Mapping[str, Any]]) -> Path:
    """CSV with the union of the rows' keys as columns (first-seen order); missing cells stay empty."""
    columns = union_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Atomically write tensors as safetensors (contiguous CPU copies, so views and GPU tensors work)."""
    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return _atomic_write(path, lambda tmp: save_file(data, tmp, metadata=dict(metadata) if metadata else None))
