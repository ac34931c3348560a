"""Atomic writes: the target is the old file or the whole new one, with normal permissions, no leftovers."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import load_file

import wiseft_lab.io
from wiseft_lab.io import atomic_write_text, write_safetensors


def test_atomic_text_replaces_and_keeps_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "results.csv"
    atomic_write_text(target, "old\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and os.listdir(target.parent) == ["results.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_every_artifact_follows_the_umask_safetensors_included(tmp_path, monkeypatch, umask):
    monkeypatch.setattr(wiseft_lab.io, "_UMASK", umask)  # the mask read at import, as a run with that umask has it
    weights = write_safetensors(tmp_path / "model.safetensors", {"w": torch.ones(2)})
    text = atomic_write_text(tmp_path / "meta.json", "{}")
    assert [stat.S_IMODE(p.stat().st_mode) for p in (weights, text)] == [0o666 & ~umask] * 2


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    write_safetensors(target, {"w": torch.arange(3.0)})

    def crash_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(wiseft_lab.io, "save_file", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        write_safetensors(target, {"w": torch.zeros(3)})
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert torch.equal(load_file(target)["w"], torch.arange(3.0))


def test_views_and_non_contiguous_tensors_are_written(tmp_path):
    base = torch.arange(12.0).view(3, 4)
    write_safetensors(tmp_path / "t.safetensors", {"t": base.T, "row": base[1]})
    loaded = load_file(tmp_path / "t.safetensors")
    assert torch.equal(loaded["t"], base.T) and torch.equal(loaded["row"], base[1])
