"""Checkpoints round-trip through safetensors + JSON (nothing is pickled)."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch

from wiseft_lab import ImageClassifier, build_zeroshot_head, load_checkpoint, save_checkpoint
from wiseft_lab.models.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    check_architecture,
    classifier_from_state,
    load_state_dict,
    read_meta,
    verification,
)
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


@pytest.fixture
def saved(tiny_bundle, tmp_path):
    clip = copy.deepcopy(tiny_bundle.model)
    model = ImageClassifier(clip, build_zeroshot_head(clip, tiny_bundle.tokenizer, ["a", "b"], "simple"))
    return save_checkpoint(tmp_path / "ckpt", model, CheckpointMeta(arch="wiseft-tiny-vit", classnames=["a", "b"],
                                                                    templates=["{}"]))


def test_the_weights_digest_is_recorded_and_checked(saved):
    weights = saved / "model.safetensors"
    assert read_meta(saved).sha256 == {"model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()}
    data = bytearray(weights.read_bytes())
    data[-4096:-2048] = bytes(range(256)) * 8  # bytes inside the tensor data: safetensors alone would accept them
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{weights} is corrupt, truncated or not the file .*meta.json "
                                              "describes .*checkpoints.verify=false"):
        load_state_dict(saved)
    with verification(False):
        assert "head.weight" in load_state_dict(saved)  # trusted: loaded unchecked


def test_a_truncated_weights_file_names_itself_checked_or_not(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=f"{weights} is corrupt, truncated"):
        load_state_dict(saved)
    with verification(False), pytest.raises(CheckpointError, match=f"{weights} cannot be read .*truncated or corrupt"):
        load_state_dict(saved)


def test_a_truncated_meta_json_names_itself(saved):
    meta = saved / "meta.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(CheckpointError, match=f"{meta} is not valid JSON .*truncated or corrupt; re-create it"):
        read_meta(saved)


def test_another_architecture_fails_in_one_line(saved, tiny_bundle):
    with pytest.raises(CheckpointError, match=r"^checkpoints.finetuned=.* is a wiseft-tiny-vit checkpoint, but this "
                                              r"run's model is ViT-B-32: .* or model.arch=wiseft-tiny-vit\.$"):
        check_architecture("ViT-B-32", {"checkpoints.finetuned": saved})
    check_architecture("wiseft-tiny-vit", {"checkpoints.finetuned": saved})
    state = load_state_dict(saved)
    state["clip.visual.proj"] = state["clip.visual.proj"][:, :3]
    del state["clip.logit_scale"]
    with pytest.raises(CheckpointError) as caught:
        classifier_from_state(copy.deepcopy(tiny_bundle.model), state, read_meta(saved))
    assert str(caught.value) == ("A wiseft-tiny-vit checkpoint does not fit this model: 1 tensors missing, "
                                 "0 unexpected, 1 of another shape (e.g. clip.logit_scale).")
