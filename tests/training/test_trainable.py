"""Trainable sets of every method on the real open_clip architectures (built on the meta device: no weights,
no download, instant), the trainable report, and the dry run that writes it."""

from __future__ import annotations

import open_clip
import pytest
import torch

from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.factory import register_architectures
from wiseft_lab.models.zeroshot import ClassificationHead
from wiseft_lab.training.methods import get_method, list_methods
from wiseft_lab.training.trainable import Trainable, describe_trainable, select_trainable, share

NUM_CLASSES = 10


def classifier(arch: str, keep_text: bool = True) -> ImageClassifier:
    register_architectures()
    with torch.device("meta"):
        clip = open_clip.create_model(arch, pretrained=None, device="meta")
        head = ClassificationHead(torch.zeros(NUM_CLASSES, clip.text_projection.shape[1]))
    return ImageClassifier(clip, head, keep_text=keep_text)


@pytest.fixture(scope="module")
def models() -> dict[str, ImageClassifier]:
    return {arch: classifier(arch) for arch in ("ViT-B-16", "ViT-B-32", "RN50", "ViT-L-14")}


def counts(model: ImageClassifier, method: str) -> tuple[int, int]:
    names = get_method(method).trainable(model)
    params = dict(model.named_parameters())
    return len(names), sum(params[n].numel() for n in names)


@pytest.mark.parametrize(("arch", "tensors", "numel"), [
    ("ViT-B-16", 64, 46_080), ("ViT-B-32", 64, 46_080), ("ViT-L-14", 112, 111_616), ("RN50", 12, 6_144)])
def test_clipfit_counts(models, arch, tensors, numel):
    assert counts(models[arch], "clipfit") == (tensors, numel)


def test_clipfit_exact_set_per_tower(models):
    names = get_method("clipfit").trainable(models["ViT-B-16"])
    text = {f"clip.transformer.resblocks.{i}.mlp.c_proj.bias" for i in range(12)}
    norms = {f"clip.visual.{ln}.{p}" for ln in ("ln_pre", "ln_post") for p in ("weight", "bias")}
    norms |= {f"clip.visual.transformer.resblocks.{i}.{ln}.{p}"
              for i in range(12) for ln in ("ln_1", "ln_2") for p in ("weight", "bias")}
    assert names == text | norms
    assert not {"clip.logit_scale", "head.weight", "head.bias", "clip.ln_final.weight"} & names
    assert not any(".mlp.c_proj.bias" in n for n in names if n.startswith("clip.visual."))
    # The official per-tower name filters select the same entries; applied to the whole model they would not.
    params = [n for n, _ in models["ViT-B-16"].named_parameters()]
    official = {n for n in params if n.startswith("clip.transformer.") and "c_proj.bias" in n}
    official |= {n for n in params if n.startswith("clip.visual.") and "ln" in n[len("clip.visual."):]}
    assert names == official
    whole_model = {n for n in params if n.startswith("clip.") and ("c_proj.bias" in n or "ln" in n[len("clip."):])}
    assert len(whole_model) == 126


def test_clipfit_on_a_resnet_trains_only_text_biases(models):
    names = get_method("clipfit").trainable(models["RN50"])
    assert names == {f"clip.transformer.resblocks.{i}.mlp.c_proj.bias" for i in range(12)}
    assert "clip.visual.attnpool.c_proj.bias" in dict(models["RN50"].named_parameters())


def test_bitfit_counts_and_set(models):
    model = models["ViT-B-16"]
    names = get_method("bitfit").trainable(model)
    towers = {n for n in names if n.startswith("clip.")}
    params = dict(model.named_parameters())
    assert (len(towers), sum(params[n].numel() for n in towers)) == (147, 171_008)
    assert names - towers == {"head.bias"}
    assert all(n.endswith("bias") for n in names)
    assert {n for n in params if n.endswith("bias")} == names  # every bias, in_proj_bias included
    assert len([n for n in towers if n.startswith("clip.visual.")]) == 74


def test_other_methods(models):
    model = models["ViT-B-32"]
    params = {n for n, _ in model.named_parameters()}
    assert get_method("flyp").trainable(model) == {n for n in params if n.startswith("clip.")}
    assert "clip.logit_scale" in get_method("flyp").trainable(model)
    assert get_method("lpft").trainable(model) == get_method("e2e").trainable(model) == {
        n for n in params if n.startswith(("clip.visual.", "head."))}
    assert get_method("lc").trainable(model) == {"head.weight", "head.bias"}
    assert {m for m in list_methods() if get_method(m).head == "text"} == {"clipfit", "bitfit", "flyp"}


def test_select_and_report(models):
    model = models["ViT-B-16"]
    chosen = select_trainable(model, get_method("clipfit").trainable)
    assert len(chosen) == 64 and all(p.requires_grad == (n in chosen) for n, p in model.named_parameters())
    report = describe_trainable(model)
    lines = report.strip().splitlines()
    assert lines[0] == "clip.visual.ln_pre.weight\t768"
    assert "trainable in image tower\t52 tensors\t39936" in lines
    assert "trainable in text tower\t12 tensors\t6144" in lines
    assert "trainable tensors\t64" in lines and "trainable parameters\t46080" in lines
    total = sum(p.numel() for p in model.parameters())
    assert f"total parameters\t{total}" in lines and lines[-1].startswith("trainable share\t")
    # A rule made from a name predicate.
    assert select_trainable(model, Trainable.by_name(lambda name: name == "head.bias")) == ["head.bias"]


@pytest.mark.parametrize(("part", "whole", "text"), [
    (10, 10, "all"), (33_610, 33_611, "all but 1"), (1, 8, "12.5%"), (31, 100_000, "0.031%"), (1, 100, "1.0%")])
def test_the_trainable_share_reads_as_a_person_would_write_it(part, whole, text):
    assert share(part, whole) == text
