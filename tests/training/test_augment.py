"""Mixup (``finetune.mixup_alpha``) and RandAugment (``finetune.randaugment``) of end-to-end fine-tuning: the loss
and the transform against hand-made references, refusal by the methods that do not apply them, and a tiny
end-to-end fine-tuning run that uses both, reproducibly."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torchvision import transforms as T

from wiseft_lab.cli import config_dir
from wiseft_lab.config import ConfigError, check_targets
from wiseft_lab.training import augment, losses
from wiseft_lab.training.augment import mixup_batch, with_randaugment
from wiseft_lab.training.losses import cross_entropy_loss


class Recorder(nn.Module):
    """A linear model that remembers the inputs of its last forward pass."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 3)
        self.seen: torch.Tensor | None = None

    def forward(self, x):
        self.seen = x.detach().clone()
        return self.linear(x)


def test_mixup_loss_mixes_inputs_and_targets_with_one_beta_draw():
    model = Recorder().train()
    inputs, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(123)
    loss = cross_entropy_loss(label_smoothing=0.1, mixup_alpha=0.4)(model, (inputs, labels))
    torch.manual_seed(123)  # the same draws by hand: lam ~ Beta(0.4, 0.4), then a permutation of the batch
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(6)
    mixed = lam * inputs + (1 - lam) * inputs[perm]
    assert torch.equal(model.seen, mixed) and 0 < lam < 1
    logits = model.linear(mixed)
    expected = (lam * nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
                + (1 - lam) * nn.functional.cross_entropy(logits, labels[perm], label_smoothing=0.1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_mixup_is_off_in_eval_mode_and_at_alpha_zero():
    model = Recorder()
    inputs, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    plain = nn.functional.cross_entropy(model.linear(inputs), labels).item()
    assert cross_entropy_loss(mixup_alpha=0.0)(model.train(), (inputs, labels)).item() == pytest.approx(plain)
    assert cross_entropy_loss(mixup_alpha=0.4)(model.eval(), (inputs, labels)).item() == pytest.approx(plain)
    assert torch.equal(model.seen, inputs)
    with pytest.raises(ValueError, match="must be > 0"):
        mixup_batch(inputs, labels, 0.0)
    torch.manual_seed(0)
    lams = [mixup_batch(inputs, labels, 1.0)[3] for _ in range(2000)]  # Beta(1, 1) = U(0, 1)
    assert np.mean(lams) == pytest.approx(0.5, abs=0.03) and np.var(lams) == pytest.approx(1 / 12, abs=0.01)


def _image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))


def test_randaugment_goes_after_the_crop_and_before_to_tensor(tiny_bundle):
    base = tiny_bundle.preprocess_train
    assert with_randaugment(base, None) is base
    augmented = with_randaugment(base, "rand-m9-n2")
    names = [type(step).__name__ for step in augmented.transforms]
    assert names[0] == "RandomResizedCrop" and names.index("RandAugment") == names.index("MaybeToTensor") - 1
    assert len(names) == len(base.transforms) + 1
    ra = augmented.transforms[names.index("RandAugment")]
    assert ra.num_layers == 2 and all(op.magnitude == 9 for op in ra.ops)
    assert ra.ops[0].hparams["translate_const"] == int(32 * 0.45)  # the tiny model's 32 px
    image = _image()
    torch.manual_seed(0)
    reference = base(image)
    torch.manual_seed(0)
    assert torch.equal(with_randaugment(base, "rand-m9-n0")(image), reference)  # zero ops: only the crop
    changed = 0
    for seed in range(8):   # timm draws its ops from Python's and numpy's generators: seed all three
        torch.manual_seed(seed)
        plain = base(image)
        torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)
        changed += not torch.equal(augmented(image), plain)
    assert changed >= 2 and augmented(image).shape == reference.shape   # 4 of 8 with these seeds
    with pytest.raises(ValueError, match="timm RandAugment string"):
        with_randaugment(base, "autoaugment")
    with pytest.raises(ValueError, match="no to-tensor step"):
        with_randaugment(T.Compose([T.CenterCrop(8)]), "rand-m9-n2")


@pytest.mark.parametrize("method", ["lc", "clipfit", "bitfit", "flyp"])
def test_methods_without_augmentation_refuse_it(method):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"finetune={method}", "+finetune.mixup_alpha=0.2"])
    with pytest.raises(ConfigError, match=r"finetune.mixup_alpha: not an option of .*; its options: .*epochs"):
        check_targets(cfg)


def _finetune(tmp_path: Path, name: str, *overrides: str) -> Path:
    from wiseft_lab.pipeline.run import run

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=wiseft_vit_b16_e2e", "smoke=tiny", "stages=[finetune]", "logger=none", "finetune.epochs=2",
            f"paths.output_dir={tmp_path / name}", f"paths.cache_dir={tmp_path / 'cache'}", *overrides])
    return Path(run(cfg)["run_dir"])


def test_end_to_end_fine_tuning_applies_both_and_is_reproducible(tmp_path, monkeypatch):
    from timm.data.auto_augment import RandAugment

    calls = {"mixup": 0, "randaugment": 0}
    real_mixup, real_ra = augment.mixup_batch, RandAugment.__call__

    def counted_mixup(*args):
        calls["mixup"] += 1
        return real_mixup(*args)

    def counted_ra(self, img):
        calls["randaugment"] += 1
        return real_ra(self, img)

    monkeypatch.setattr(losses, "mixup_batch", counted_mixup)
    monkeypatch.setattr(RandAugment, "__call__", counted_ra)
    options = ("finetune.mixup_alpha=0.4", "finetune.randaugment=rand-m9-n2")
    first = _finetune(tmp_path, "a", *options)
    images, batches = calls["randaugment"], calls["mixup"]
    # 2 epochs of 20 images (10 classes x 2) in batches of 8 (the synthetic set also reads its labels through the
    # transform once, hence the extra 20)
    assert batches == 2 * 3 and images >= 2 * 20
    second = _finetune(tmp_path, "b", *options)
    plain = _finetune(tmp_path, "c")
    weights = [load_file(run / "checkpoints/finetuned/model.safetensors") for run in (first, second, plain)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # same seed, same augmentations
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert calls == {"randaugment": 2 * images, "mixup": 2 * batches}  # the plain run used neither


def test_coop_train_transform_crops_widely_flips_and_normalises_like_eval(tiny_bundle):
    from wiseft_lab.training.augment import coop_train_transform

    transform = coop_train_transform(tiny_bundle.preprocess_val)
    crop = transform.transforms[0]
    assert isinstance(crop, T.RandomResizedCrop) and crop.scale == (0.08, 1.0)
    assert crop.interpolation == T.InterpolationMode.BICUBIC
    assert any(isinstance(step, T.RandomHorizontalFlip) for step in transform.transforms)
    image = Image.new("L", (50, 40), 128)   # grey: RGB conversion, then the eval transform's normalisation
    assert torch.allclose(transform(image), tiny_bundle.preprocess_val(image.convert("RGB")))


def test_drop_last_drops_only_a_partial_batch_of_a_set_that_has_a_full_one():
    from wiseft_lab.training.job import epoch_loader

    data = torch.utils.data.TensorDataset(torch.arange(10))
    assert len(epoch_loader(data, 4, 0, seed=0, drop_last=True)(0)) == 2
    assert len(epoch_loader(data, 4, 0, seed=0)(0)) == 3
    assert len(epoch_loader(data, 16, 0, seed=0, drop_last=True)(0)) == 1   # smaller than a batch: kept
