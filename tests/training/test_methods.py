"""CLIPFit, BitFit, FLYP and LP-FT on the tiny random model: one optimiser step changes exactly what the method
trains, the CLIPFit loss against a hand computation, the KD term at initialisation, the text head under WiSE-FT,
and CoOp/CLIPFit's per-epoch learning rates."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math

import open_clip
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from wiseft_lab.data.base import TaskData
from wiseft_lab.models.checkpoint import CheckpointMeta, load_state_dict
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.templates import coop_templates
from wiseft_lab.models.text_head import PromptBank, build_text_head, finalize_text_head, text_weights
from wiseft_lab.models.zeroshot import build_zeroshot_head
from wiseft_lab.training.job import FinetuneJob, FinetuneMethod
from wiseft_lab.training.losses import kd_term, text_head_loss
from wiseft_lab.training.methods import get_method
from wiseft_lab.training.schedules import Constant, EpochWarmupCosine, epoch_warmup_cosine_lr
from wiseft_lab.training.trainable import select_trainable
from wiseft_lab.weight_space.interpolate import interpolate

CLASSNAMES = ["golden_retriever", "tabby cat", "red fox"]
TEMPLATES = ["a photo of a {}."]
IMAGES = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


def identity(x):
    return x


def make_job(bundle, tmp_path, method: str, *, lr: float = 0.05, epochs: int = 1, batch_size: int = 6,
             **options) -> tuple[FinetuneMethod, FinetuneJob]:
    """The method with its options, and a job on 6 tensor "images" (the bundle's transforms are the identity)."""
    cls = get_method(method)
    if "train_transform" in {f.name for f in dataclasses.fields(cls)}:
        options.setdefault("train_transform", "openclip")
    chosen = cls(epochs=epochs, batch_size=batch_size, clip_grad_norm=None, **options)
    clip = copy.deepcopy(bundle.model)
    build = build_text_head if chosen.head == "text" else build_zeroshot_head
    model = ImageClassifier(clip, build(clip, bundle.tokenizer, CLASSNAMES, TEMPLATES), keep_text=chosen.keeps_text)
    select_trainable(model, chosen.trainable)
    data = TaskData(TensorDataset(IMAGES, LABELS), CLASSNAMES, TEMPLATES)
    job = FinetuneJob(
        model=model, bundle=dataclasses.replace(bundle, preprocess_train=identity, preprocess_val=identity),
        train_data=data, precision="fp32", seed=0,
        optimizer_factory=functools.partial(torch.optim.SGD, lr=lr, momentum=0.9, weight_decay=5e-4),
        scheduler_factory=functools.partial(Constant, warmup_steps=0), checkpoint_dir=tmp_path / method,
        meta=CheckpointMeta(arch=bundle.arch, classnames=CLASSNAMES, templates=TEMPLATES, head=chosen.head,
                            keep_text=chosen.keeps_text, method=method))
    return chosen, job


def changed_entries(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("method", ["clipfit", "bitfit", "flyp"])
def test_one_step_changes_exactly_the_trainable_entries(tiny_bundle, tmp_path, method):
    chosen, job = make_job(tiny_bundle, tmp_path, method)
    trainable = {n for n, p in job.model.named_parameters() if p.requires_grad}
    before = {k: v.clone() for k, v in job.model.state_dict().items()}
    model = chosen.run(job)  # 6 examples, batch 6, 1 epoch: one optimiser step
    changed = changed_entries(before, model.state_dict())
    # head.weight is not trained: it is derived from the (changed) text tower and rebuilt from it.
    assert changed == trainable | {"head.weight"}
    bank = PromptBank(tiny_bundle.tokenizer, CLASSNAMES, TEMPLATES)
    with torch.no_grad():
        assert torch.allclose(model.head.weight, text_weights(model.clip, bank), atol=1e-6)
    assert (tmp_path / method / "epoch_001" / "model.safetensors").is_file()


def test_lpft_keeps_both_stages(tiny_bundle, tmp_path):
    chosen, job = make_job(tiny_bundle, tmp_path, "lpft", lp={"epochs": 2, "lr": 0.01})
    zeroshot = {k: v.clone() for k, v in job.model.state_dict().items()}
    chosen.run(job)
    lp, ft = load_state_dict(tmp_path / "lpft" / "lp"), job.model.state_dict()
    assert changed_entries(zeroshot, lp) == {"head.weight", "head.bias"}
    assert changed_entries(zeroshot, ft) == {n for n in zeroshot if n.startswith(("clip.visual.", "head."))}
    assert not any(k.startswith("clip.transformer.") for k in ft)  # image-only method: no text tower saved
    assert (tmp_path / "lpft" / "lp_epochs" / "epoch_002").is_dir()


def test_clipfit_loss_matches_a_hand_computation(tiny_bundle):
    model = ImageClassifier(copy.deepcopy(tiny_bundle.model), build_text_head(
        tiny_bundle.model, tiny_bundle.tokenizer, CLASSNAMES, TEMPLATES), keep_text=True).eval()
    original_tower = copy.deepcopy(model.clip)
    with torch.no_grad():  # make the tuned tower differ from the original so that the KD term is not 0
        for name, param in model.clip.named_parameters():
            if name.endswith("mlp.c_proj.bias") and not name.startswith("visual."):
                param.add_(0.3 * torch.randn_like(param))
    tokens = open_clip.tokenize([t.format(c.replace("_", " ")) for c in CLASSNAMES for t in TEMPLATES],
                                context_length=16)
    assert torch.equal(tokens, PromptBank(tiny_bundle.tokenizer, CLASSNAMES, TEMPLATES).tokens)
    with torch.no_grad():
        original = original_tower.encode_text(tokens)
        text, image = model.clip.encode_text(tokens), model.clip.encode_image(IMAGES)
        logits = model.clip.logit_scale.exp() * (image / image.norm(dim=1, keepdim=True)) @ (
            text / text.norm(dim=1, keepdim=True)).T
        cross_entropy = -(logits - logits.logsumexp(dim=1, keepdim=True))[torch.arange(6), LABELS].mean()
        cosines = (F.normalize(text, dim=1) * F.normalize(original, dim=1)).sum(dim=1)
        expected = cross_entropy + 8.0 * (1.0 - cosines.mean())
        bank = PromptBank(tiny_bundle.tokenizer, CLASSNAMES, TEMPLATES)
        value = text_head_loss(bank, kd_lambda=8.0, original=original)(model, (IMAGES, LABELS))
    assert 1.0 - cosines.mean() > 1e-3
    assert value.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_kd_term_is_zero_at_initialisation(tiny_bundle):
    model = ImageClassifier(copy.deepcopy(tiny_bundle.model), build_text_head(
        tiny_bundle.model, tiny_bundle.tokenizer, CLASSNAMES, TEMPLATES), keep_text=True)
    bank = PromptBank(tiny_bundle.tokenizer, CLASSNAMES, TEMPLATES)
    with torch.no_grad():
        original = model.clip.encode_text(bank.tokens)
        assert abs(kd_term(model.clip.encode_text(bank.tokens), original).item()) < 1e-6
        with_kd = text_head_loss(bank, kd_lambda=8.0, original=original)(model, (IMAGES, LABELS))
        without = text_head_loss(bank)(model, (IMAGES, LABELS))
    assert with_kd.item() == pytest.approx(without.item(), abs=1e-5)


def test_wiseft_rebuilds_the_text_head_from_the_interpolated_tower(tiny_bundle, tmp_path):
    chosen, job = make_job(tiny_bundle, tmp_path, "clipfit", lr=2.0, epochs=2, batch_size=3)
    zeroshot = {k: v.clone() for k, v in job.model.state_dict().items()}
    finetuned = chosen.run(job).state_dict()
    merged = interpolate(zeroshot, finetuned, 0.5)
    model = copy.deepcopy(job.model)
    model.load_state_dict(merged)
    assert finalize_text_head(model, job.meta, tiny_bundle.tokenizer)
    bank = PromptBank(tiny_bundle.tokenizer, CLASSNAMES, TEMPLATES)
    with torch.no_grad():
        rebuilt = text_weights(model.clip, bank)
    assert torch.allclose(model.head.weight, rebuilt, atol=1e-6)
    assert not torch.allclose(model.head.weight, merged["head.weight"], atol=1e-4)  # not a mix of two heads
    assert not finalize_text_head(model, job.meta.replace(head="linear"), tiny_bundle.tokenizer)


def test_coop_prompts():
    assert coop_templates(["dtd"]) == ("a photo of a {}, a type of texture.",)
    assert coop_templates([None, "eurosat"]) == ("a centered satellite photo of {}.",)
    assert coop_templates(["my_data"]) == ("a photo of a {}.",)


# CoOp/CLIPFit's schedule as Dassl computes it (ConstantWarmupScheduler over CosineAnnealingLR(T_max=10),
# WARMUP_RECOUNT=True), lr 0.002, 10 epochs, one warm-up epoch at 1e-5: the value in force during each epoch.
DASSL_LRS = [1e-05, 0.002, 0.0019510565162951536, 0.0018090169943749473, 0.0015877852522924731,
             0.0013090169943749475, 0.001, 0.0006909830056250527, 0.000412214747707527, 0.00019098300562505268]


def test_clipfit_schedule_per_epoch(caplog):
    assert [epoch_warmup_cosine_lr(e, 0.002, 10) for e in range(10)] == pytest.approx(DASSL_LRS, rel=1e-12)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.002)
    with caplog.at_level("WARNING"):  # a preset's per-step warm-up is said not to apply
        schedule = EpochWarmupCosine(optimizer, total_steps=30, epochs=10, warmup_steps=20)
    assert "scheduler.warmup_steps=20 does not apply" in caplog.text
    per_step = [schedule.set_step(step) for step in range(30)]
    assert per_step == pytest.approx([lr for lr in DASSL_LRS for _ in range(3)], rel=1e-12)
    assert epoch_warmup_cosine_lr(3, 1.0, 5, warmup_epochs=2, warmup_lr=0.1) == pytest.approx(
        0.5 * (1 + math.cos(math.pi / 5)))



TINY_RESNET = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def tiny_resnet_bundle(tmp_path_factory):
    """A ModifiedResNet CLIP (BatchNorm, attention pooling with its own c_proj) small enough for a CPU step."""
    from wiseft_lab.models.factory import create_clip

    directory = tmp_path_factory.mktemp("arch")
    (directory / "wiseft-test-tiny-rn.json").write_text(json.dumps(TINY_RESNET))
    open_clip.add_model_config(directory)
    torch.manual_seed(0)
    return create_clip("wiseft-test-tiny-rn", pretrained=None)


def test_clipfit_step_on_a_resnet_leaves_the_image_tower_bit_for_bit(tiny_resnet_bundle, tmp_path):
    """ResNet: only the text MLP biases train; BatchNorm running stats of the frozen image tower do not move."""
    chosen, job = make_job(tiny_resnet_bundle, tmp_path, "clipfit")
    trainable = {n for n, p in job.model.named_parameters() if p.requires_grad}
    assert trainable == {f"clip.transformer.resblocks.{i}.mlp.c_proj.bias" for i in range(2)}
    assert "clip.visual.attnpool.c_proj.bias" in job.model.state_dict()
    before = {k: v.clone() for k, v in job.model.state_dict().items()}
    changed = changed_entries(before, chosen.run(job).state_dict())
    assert changed == trainable | {"head.weight"}
    assert any(k.endswith("running_mean") for k in before)
