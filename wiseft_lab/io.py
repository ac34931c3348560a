"""Crash-safe file writing: every artifact is written to a temporary file, then renamed into place."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be queried by setting it


def _temporary_sibling(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def _atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` fills a temporary sibling, which is synced and renamed over ``path``: never half a file.

    The file gets the umask's mode after ``write`` (mkstemp makes it 0600, and safetensors replaces the file with
    its own 0600 one), so colleagues read checkpoints as they read every other file of a run.
    """
    path = Path(path)
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


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` so that ``path`` is either the old file or the complete new one."""
    return _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


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
