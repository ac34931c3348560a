"""FLYP, "Finetune like you pretrain" (Goyal et al., CVPR 2023): contrastive fine-tuning of both towers.

Each training image is paired with a prompt of its class (a template drawn uniformly per example and step,
as FLYP's one-row-per-(image, template) CSV does) and the CLIP loss is minimised over the batch: symmetric
cross-entropy of ``logit_scale.exp() * norm(img) @ norm(txt).T`` against the diagonal (other examples of the
same class count as negatives, as in FLYP). Every CLIP entry is trained, ``logit_scale`` included (FLYP
optimises ``model.parameters()``); the head is the zero-shot head rebuilt from the fine-tuned text tower with
all templates, and is rebuilt again after every load or merge.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.zeroshot import normalize
from wiseft_lab.training.methods import FinetuneJob, Trainable, register_method, run_trainer
from wiseft_lab.training.text_head import PromptBank, refresh_text_head


def clip_entries(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters() if name.startswith("clip.")}


def sample_prompts(bank: PromptBank, labels: torch.Tensor) -> torch.Tensor:
    """One tokenised prompt per example: its class with a template drawn from the global (per-epoch seeded) RNG."""
    choice = torch.randint(bank.num_templates, (len(labels),))  # on the CPU: the same draws on every device
    return bank.per_class()[labels.cpu(), choice].to(bank.tokens.device)


def clip_contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ClipLoss`` on one device: mean of image->text and text->image cross-entropy."""
    logits = logit_scale.exp() * normalize(image.float()) @ normalize(text.float()).T
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def flyp_loss(bank: PromptBank):
    def loss(model: nn.Module, batch) -> torch.Tensor:
        images, labels = batch
        text = model.clip.encode_text(sample_prompts(bank, labels))
        return clip_contrastive_loss(model.image_features(images), text, model.clip.logit_scale)
    return loss


@register_method("flyp", trainable=Trainable(clip_entries), head="text")
def finetune_flyp(job: FinetuneJob) -> ImageClassifier:
    model = job.model
    bank = PromptBank(job.bundle.tokenizer, job.meta["classnames"], job.meta["templates"],
                      next(model.parameters()).device)
    data = job.train_data(transform=job.bundle.preprocess_train)
    run_trainer(job, model, data.dataset, loss_fn=flyp_loss(bank), before_save=lambda: refresh_text_head(model, bank))
    refresh_text_head(model, bank)
    return model
