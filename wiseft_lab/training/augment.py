"""Training-time augmentations of the model-soups search: mixup and RandAugment (``finetune.mixup_alpha``,
``finetune.randaugment``), used by end-to-end fine-tuning (``e2e`` and stage 2 of ``lpft``).

- Mixup (Zhang et al., ICLR 2018): per batch, ``lam ~ Beta(alpha, alpha)`` and a random pairing ``perm`` of the
  batch; the model sees ``lam * x + (1 - lam) * x[perm]`` and the loss is
  ``lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm])`` (with the run's label smoothing in both terms).
  ``alpha = 0`` turns it off. Draws come from torch's global generator, which the trainer seeds per epoch.
- RandAugment (Cubuk et al., 2020) as timm implements it, from the config string the model-soups ingredients
  record (``rand-m{magnitude}-n{ops}``, e.g. ``rand-m9-n2``; any timm ``rand-...`` string works), applied to the
  PIL image right after the random crop of open_clip's train transform. ``null`` turns it off.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms as T


class SeededPerExample(Dataset):
    """``dataset[i]`` with its random augmentation drawn from its own seed, a function of (seed, epoch, i).

    Why: torchvision's crops draw from torch's global generator and timm's RandAugment from Python's and NumPy's,
    so with DataLoader workers an example's augmentation would depend on which worker loads it, and on how many
    there are. Seeding each draw by the example makes a run's augmentations the same with 0, 1 or 8 workers (and
    whichever process or rank loads the example); the caller's generator states are restored afterwards.
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: int):
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        key = ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index)) % 2**32
        states = torch.get_rng_state(), random.getstate(), np.random.get_state()
        torch.default_generator.manual_seed(key)  # the CPU generator only: torch.manual_seed also queues CUDA seeding
        random.seed(key)
        np.random.seed(key)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(states[0])
            random.setstate(states[1])
            np.random.set_state(states[2])


def mixup_batch(inputs: torch.Tensor, labels: torch.Tensor, alpha: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """``(mixed inputs, labels, paired labels, lam)`` for one batch; ``lam`` ~ Beta(alpha, alpha)."""
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(inputs.shape[0], device=inputs.device)
    return lam * inputs + (1.0 - lam) * inputs[perm], labels, labels[perm], lam


def _is_to_tensor(step) -> bool:
    return isinstance(step, (T.ToTensor, T.PILToTensor)) or type(step).__name__ in {"MaybeToTensor", "ToTensor"}


def _image_size(steps) -> int:
    for step in steps:
        size = getattr(step, "size", None)
        if isinstance(step, (T.RandomResizedCrop, T.CenterCrop, T.Resize)) and size is not None:
            return int(size if isinstance(size, int) else min(size))
    return 224


def _mean(steps) -> tuple[float, ...]:
    for step in steps:
        if isinstance(step, T.Normalize):
            return tuple(float(m) for m in step.mean)
    return (0.48145466, 0.4578275, 0.40821073)  # CLIP's


def randaugment_transform(spec: str, image_size: int, mean: tuple[float, ...]):
    """timm's RandAugment for ``spec`` with timm's ImageNet-train hyper-parameters (translation, fill colour)."""
    from timm.data.auto_augment import rand_augment_transform

    if not isinstance(spec, str) or not spec.startswith("rand"):
        raise ValueError(f"finetune.randaugment takes a timm RandAugment string such as 'rand-m9-n2', not {spec!r}")
    hparams = {"translate_const": int(image_size * 0.45), "img_mean": tuple(round(255 * m) for m in mean)}
    return rand_augment_transform(spec, hparams)


def with_randaugment(transform, spec: str | None):
    """``transform`` (a torchvision ``Compose`` of PIL steps, then to-tensor) with RandAugment before to-tensor."""
    if not spec:
        return transform
    steps = list(getattr(transform, "transforms", []))
    index = next((i for i, step in enumerate(steps) if _is_to_tensor(step)), None)
    if index is None:
        raise ValueError(f"Cannot place RandAugment: the train transform has no to-tensor step ({transform})")
    augment = randaugment_transform(spec, _image_size(steps), _mean(steps))
    return T.Compose([*steps[:index], augment, *steps[index:]])


def coop_train_transform(preprocess_val) -> T.Compose:
    """The train augmentation of CoOp/CLIPFit (Dassl's ``random_resized_crop, random_flip, normalize``).

    Random resized crop with Dassl's default scale (0.08, 1) and bicubic resampling, a horizontal flip, then the
    to-tensor and normalisation steps of ``preprocess_val`` (open_clip's eval transform, so the model's size and
    mean/std). open_clip's own train transform crops only (0.9, 1) and never flips.
    """
    steps = list(getattr(preprocess_val, "transforms", []))
    index = next((i for i, step in enumerate(steps) if _is_to_tensor(step)), None)
    if index is None:
        raise ValueError(f"Cannot build the CoOp train transform from {preprocess_val}: it has no to-tensor step")
    crop = T.RandomResizedCrop(_image_size(steps), scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC)
    to_rgb = T.Lambda(lambda image: image.convert("RGB"))
    return T.Compose([crop, T.RandomHorizontalFlip(), to_rgb, *steps[index:]])
