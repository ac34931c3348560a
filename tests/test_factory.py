"""Model creation: custom architectures, local checkpoints, and clear errors when weights are out of reach."""

from __future__ import annotations

import huggingface_hub.constants
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from wiseft_lab.models.factory import create_clip


def test_custom_architectures_are_registered():
    bundle = create_clip("wiseft-tiny-vit")
    assert "wiseft-tiny-vit" in open_clip.list_models() and bundle.pretrained is None
    assert bundle.model.visual.image_size == (32, 32)


def test_local_checkpoint_file_is_loaded(tmp_path):
    source = create_clip("wiseft-tiny-vit").model
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    loaded = create_clip("wiseft-tiny-vit", str(path)).model
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_clear_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="Unknown open_clip architecture 'ViT-Nope'"):
        create_clip("ViT-Nope")
    with pytest.raises(FileNotFoundError, match="looks like a file path but does not exist"):
        create_clip("wiseft-tiny-vit", str(tmp_path / "missing.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match=r"model.pretrained=/path/to/open_clip_model.safetensors"):
        create_clip("ViT-B-32", "openai")
