"""Checkpoints round-trip through safetensors + JSON (nothing is pickled)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from wiseft_lab import ImageClassifier, build_zeroshot_head, load_checkpoint, save_checkpoint
from wiseft_lab.models.checkpoint import CheckpointMeta, read_meta
from wiseft_lab.models.classifier import has_text_tower


def test_round_trip(tiny_bundle, tmp_path):
    clip = copy.deepcopy(tiny_bundle.model)
    model = ImageClassifier(clip, build_zeroshot_head(clip, tiny_bundle.tokenizer, ["a", "b", "c"], "simple"))
    save_checkpoint(tmp_path / "ckpt", model,
                    CheckpointMeta(arch="wiseft-tiny-vit", classnames=["a", "b", "c"], templates=["a photo of a {}."]))
    assert (tmp_path / "ckpt/model.safetensors").read_bytes()[8:9] == b"{"  # safetensors: u64 length + JSON header
    assert json.loads((tmp_path / "ckpt/meta.json").read_text())["classnames"] == ["a", "b", "c"]
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(images), model.eval()(images))
    assert loaded.head.weight.shape == (3, 32)
    assert not has_text_tower(loaded.clip) and meta.arch == "wiseft-tiny-vit" and meta.method == "zeroshot"


def test_metadata_keeps_unknown_keys_and_names_missing_ones(tmp_path):
    record = {"arch": "x", "classnames": ["a"], "templates": ["{}"], "from_a_newer_version": 1}
    meta = CheckpointMeta.from_dict(record)
    assert meta.extra == {"from_a_newer_version": 1} and meta.to_dict()["from_a_newer_version"] == 1
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta
    with pytest.raises(ValueError, match="lacks classnames, templates"):
        CheckpointMeta.from_dict({"arch": "x"})


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected model.safetensors and meta.json"):
        read_meta(tmp_path)
