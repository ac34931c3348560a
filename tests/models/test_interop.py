"""Export to open_clip and import from it: plain open_clip loads the export strictly and gives the same logits."""

from __future__ import annotations

import argparse
import copy

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from tests.conftest import TINY_ARCH
from wiseft_lab import ImageClassifier, build_zeroshot_head, save_checkpoint
from wiseft_lab.export_cli import main as export_main
from wiseft_lab.io import read_json
from wiseft_lab.models.checkpoint import CheckpointMeta, load_state_dict, read_meta
from wiseft_lab.models.classifier import TEXT_TOWER_ATTRS
from wiseft_lab.models.interop import (
    InteropError,
    classifier_state_from_open_clip,
    export_open_clip,
    import_open_clip_checkpoint,
    is_open_clip_file,
    load_open_clip_state,
)

CLASSES = ["cat", "dog", "bird"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


def is_text_entry(name: str) -> bool:
    return name.split(".")[0] in TEXT_TOWER_ATTRS


def open_clip_logits(model: torch.nn.Module, head: dict, images: torch.Tensor) -> torch.Tensor:
    """What a plain open_clip user computes from the export (the formula head.json states)."""
    features = model.encode_image(images)
    return F.linear(features / features.norm(dim=-1, keepdim=True), head["weight"], head["bias"])


@pytest.fixture()
def finetuned(tiny_bundle, tmp_path):
    """A 'fine-tuned' checkpoint without text tower (image tower and head moved off the zero-shot model), the
    zero-shot weights file its head came from, and the zero-shot head."""
    clip = copy.deepcopy(tiny_bundle.model)
    zeroshot_weights = tmp_path / "zeroshot_clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, zeroshot_weights)
    head = build_zeroshot_head(clip, tiny_bundle.tokenizer, CLASSES, TEMPLATES)
    zeroshot_head = head.weight.detach().clone()
    model = ImageClassifier(clip, head)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in [*model.clip.visual.parameters(), model.head.weight, model.head.bias]:
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    meta = CheckpointMeta(arch=TINY_ARCH, pretrained=str(zeroshot_weights), classnames=CLASSES, templates=TEMPLATES,
                          keep_text=False, head="linear", method="e2e", preprocess=dict(clip.visual.preprocess_cfg))
    save_checkpoint(tmp_path / "finetuned", model.eval(), meta)
    return tmp_path / "finetuned", zeroshot_weights, zeroshot_head, model


def test_export_loads_strictly_in_open_clip_with_identical_logits(finetuned, tmp_path):
    checkpoint, zeroshot_weights, _, model = finetuned
    files = export_open_clip(checkpoint, tmp_path / "out")
    exported = load_file(files["weights"])
    reference = open_clip.create_model(TINY_ARCH)
    assert set(exported) == set(reference.state_dict())  # every key open_clip has, and no other
    result = reference.load_state_dict(exported, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    loaded, _, _ = open_clip.create_model_and_transforms(TINY_ARCH, pretrained=str(files["weights"]))  # strict
    source = load_file(zeroshot_weights)
    own = model.state_dict()
    for name, value in loaded.state_dict().items():  # text tower from the zero-shot weights, the rest its own
        expected = source[name] if is_text_entry(name) else own[f"clip.{name}"]
        assert torch.equal(value, expected), name

    head = load_file(files["head"])
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(open_clip_logits(loaded.eval(), head, images), model.eval()(images))
        by_dir, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'out'}")  # config beside it
        assert torch.equal(open_clip_logits(by_dir.eval(), head, images), model(images))

    info = read_json(files["head_meta"])
    assert info["classnames"] == CLASSES and info["templates"] == TEMPLATES and info["arch"] == TINY_ARCH
    assert info["text_tower"] == str(zeroshot_weights) and info["logit_bias"] is None
    assert info["source_checkpoint"] == str(checkpoint.resolve())


def test_a_kept_text_tower_is_exported_as_trained(tiny_bundle, tmp_path):
    clip = copy.deepcopy(tiny_bundle.model)
    model = ImageClassifier(clip, build_zeroshot_head(clip, tiny_bundle.tokenizer, CLASSES, "simple"), keep_text=True)
    with torch.no_grad():
        model.clip.ln_final.bias.add_(1.0)  # e.g. FLYP / CLIPFit trained the text tower
    save_checkpoint(tmp_path / "ckpt", model, CheckpointMeta(arch=TINY_ARCH, pretrained=None, keep_text=True,
                                                             classnames=CLASSES, templates=["a photo of a {}."]))
    assert export_main([str(tmp_path / "ckpt"), str(tmp_path / "out")]) == 0
    exported = load_file(tmp_path / "out/open_clip_model.safetensors")
    assert torch.equal(exported["ln_final.bias"], model.clip.ln_final.bias.detach())


def test_export_refuses_when_the_text_tower_is_unavailable(finetuned, tmp_path, capsys):
    checkpoint, zeroshot_weights, _, _ = finetuned
    meta = read_meta(checkpoint)
    state = load_state_dict(checkpoint)
    save_checkpoint(tmp_path / "random_source", state, meta.replace(pretrained=None))
    with pytest.raises(InteropError, match="text tower its head came from is unavailable"):
        export_open_clip(tmp_path / "random_source", tmp_path / "out1")
    save_checkpoint(tmp_path / "moved", state, meta.replace(pretrained=str(tmp_path / "gone.safetensors")))
    assert export_main([str(tmp_path / "moved"), str(tmp_path / "out2")]) == 2
    assert "--text-from" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    # the zero-shot weights given explicitly make both exportable
    export_open_clip(tmp_path / "moved", tmp_path / "out3", text_source=str(zeroshot_weights))
    assert (tmp_path / "out3/open_clip_model.safetensors").is_file()


def test_the_text_tower_can_come_from_an_export_directory_not_a_checkpoint_directory(finetuned, tmp_path, capsys):
    checkpoint, zeroshot_weights, _, _ = finetuned
    meta = read_meta(checkpoint)
    moved = tmp_path / "moved"
    save_checkpoint(moved, load_state_dict(checkpoint), meta.replace(pretrained=str(tmp_path / "gone.safetensors")))
    export_open_clip(checkpoint, tmp_path / "first")  # an export directory holds the full CLIP
    assert export_main([str(moved), str(tmp_path / "out"), "--text-from", str(tmp_path / "first")]) == 0
    again = load_file(tmp_path / "out/open_clip_model.safetensors")
    first = load_file(tmp_path / "first/open_clip_model.safetensors")
    assert set(again) == set(first) and all(torch.equal(again[k], first[k]) for k in first)
    # a wiseft-lab checkpoint directory (no text tower in it) is refused with a message, not a traceback
    assert export_main([str(moved), str(tmp_path / "out2"), "--text-from", str(checkpoint)]) == 2
    assert "is a directory without open_clip_model.safetensors" in capsys.readouterr().err


def test_export_then_import_gives_the_same_classifier_state(finetuned, tmp_path):
    checkpoint, zeroshot_weights, zeroshot_head, _ = finetuned
    export_open_clip(checkpoint, tmp_path / "out")
    weights = tmp_path / "out/open_clip_model.safetensors"
    assert is_open_clip_file(weights) and not is_open_clip_file(checkpoint)
    imported = import_open_clip_checkpoint(weights, tmp_path / "imported", head_from=tmp_path / "out")
    original, again = load_state_dict(checkpoint), load_state_dict(imported)
    assert set(again) == set(original)
    for name, value in original.items():
        assert torch.equal(again[name], value), name
    meta = read_meta(imported)
    assert meta.keep_text is False and meta.classnames == CLASSES and meta.templates == TEMPLATES
    assert meta.pretrained == str(zeroshot_weights)  # the head's zero-shot source, as in the original
    assert meta.extra["imported_from"] == str(weights)

    # the head built from the export's own text tower is the zero-shot head again: the text tower is the source's
    state, meta = classifier_state_from_open_clip(load_open_clip_state(tmp_path / "out"), TINY_ARCH,
                                                  classnames=CLASSES, templates=TEMPLATES, source=weights)
    torch.testing.assert_close(state["head.weight"], zeroshot_head, rtol=0, atol=1e-6)
    assert meta.pretrained == str(weights) and meta.head == "linear"


def test_open_clip_training_checkpoints_are_imported(finetuned, tiny_bundle, tmp_path):
    """``epoch_N.pt`` as open_clip_train/main.py writes it under DDP: module.-prefixed state + optimiser state."""
    checkpoint, _, _, model = finetuned
    clip = copy.deepcopy(tiny_bundle.model)
    with torch.no_grad():
        clip.visual.conv1.weight.mul_(0.5)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=1e-3)
    clip.logit_scale.grad = torch.ones_like(clip.logit_scale)
    optimizer.step()
    path = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "my-run", "state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()},
                "optimizer": optimizer.state_dict(), "scaler": {"scale": 65536.0, "_growth_tracker": 0}}, path)

    state = load_open_clip_state(path)
    assert set(state) == set(clip.state_dict())
    assert torch.equal(state["visual.conv1.weight"], clip.visual.conv1.weight.detach())

    imported = import_open_clip_checkpoint(path, tmp_path / "imported", TINY_ARCH, head_from=checkpoint)
    got, ref = load_state_dict(imported), load_state_dict(checkpoint)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in ref.items()}  # interpolable with it
    assert torch.equal(got["clip.visual.conv1.weight"], clip.visual.conv1.weight.detach())
    assert torch.equal(got["head.weight"], model.head.weight.detach())
    assert torch.equal(got["clip.logit_scale"], clip.logit_scale.detach())


def test_unreadable_or_foreign_files_are_refused(finetuned, tmp_path):
    checkpoint = finetuned[0]
    with pytest.raises(InteropError, match="needs no import"):
        load_open_clip_state(checkpoint)
    with pytest.raises(InteropError, match="wiseft-lab classifier"):
        load_open_clip_state(checkpoint / "model.safetensors")
    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1)},
               tmp_path / "pickled.pt")
    with pytest.raises(InteropError, match="not a weights-only torch checkpoint"):
        load_open_clip_state(tmp_path / "pickled.pt")
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InteropError, match="not a full 'wiseft-tiny-vit' model: missing"):
        classifier_state_from_open_clip(load_open_clip_state(tmp_path / "other.pt"), TINY_ARCH,
                                        classnames=CLASSES, templates="simple")
