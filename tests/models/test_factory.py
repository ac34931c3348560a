"""Model creation: custom architectures, local checkpoints, and clear errors when weights are out of reach."""

from __future__ import annotations

import logging

import huggingface_hub.constants
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from wiseft_lab.errors import UserFacingError
from wiseft_lab.models.factory import WeightsUnavailableError, create_clip, is_torchscript


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


def test_a_directory_means_its_open_clip_weights_file_or_is_refused(tmp_path):
    source = create_clip("wiseft-tiny-vit").model
    export = tmp_path / "exported"
    export.mkdir()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, export / "open_clip_model.safetensors")
    bundle = create_clip("wiseft-tiny-vit", str(export))  # a wiseft-lab-export directory
    assert bundle.pretrained == str(export / "open_clip_model.safetensors")
    assert torch.equal(bundle.model.visual.conv1.weight, source.visual.conv1.weight)
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(FileNotFoundError, match="is a directory without open_clip_model.safetensors"):
        create_clip("wiseft-tiny-vit", str(tmp_path / "checkpoint"))


def test_an_unknown_tag_is_one_message(caplog):
    """Refused before open_clip logs an ERROR line of its own: the console shows one message per failure."""
    with pytest.raises(WeightsUnavailableError, match="not a tag open_clip knows") as raised:
        create_clip("wiseft-tiny-vit", "laion2b_nope")
    assert isinstance(raised.value, UserFacingError)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, but it is how OpenAI ships CLIP
def test_openai_torchscript_files_load(tmp_path):
    """OpenAI's release format (a TorchScript archive) is refused by torch.load(weights_only=True); it loads here."""
    source = create_clip("wiseft-tiny-vit").model.eval()
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.script(source), str(path))
    assert is_torchscript(str(path))
    loaded = create_clip("wiseft-tiny-vit", str(path)).model.eval()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_checkpoint_is_evaluated_with_the_preprocessing_it_recorded():
    from wiseft_lab.models.factory import with_eval_preprocess

    bundle = create_clip("wiseft-tiny-vit")
    recorded = {**bundle.model.visual.preprocess_cfg, "resize_mode": "squash", "mean": [0.5, 0.5, 0.5]}
    transform = with_eval_preprocess(bundle, recorded).preprocess_val
    steps = [type(step).__name__ for step in transform.transforms]
    assert "CenterCrop" not in steps   # squash resizes straight to the size, no crop
    assert tuple(transform.transforms[-1].mean) == (0.5, 0.5, 0.5)
    assert with_eval_preprocess(bundle, None) is bundle
