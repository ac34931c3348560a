"""The finetune stage: the zero-shot model of ``model.pretrained``, then the configured method, as checkpoints.

Returns the :class:`Endpoints` the merge stage takes: the zero-shot and fine-tuned checkpoint directories.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from wiseft_lab.config import ConfigError
from wiseft_lab.data.base import TaskData
from wiseft_lab.evaluation.suite import HOLDOUT, evaluate
from wiseft_lab.models.checkpoint import WEIGHTS_FILE, CheckpointMeta, save_checkpoint
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.interop import import_open_clip_checkpoint, is_open_clip_source
from wiseft_lab.models.templates import coop_templates, resolve_templates, template_text
from wiseft_lab.models.text_head import build_text_head
from wiseft_lab.models.zeroshot import build_zeroshot_head
from wiseft_lab.pipeline.context import RunContext, digest, hydra_choice, weights_identity
from wiseft_lab.pipeline.guards import adopt, training_dir
from wiseft_lab.training.job import FinetuneJob
from wiseft_lab.training.trainable import select_trainable, write_trainable_report

log = logging.getLogger(__name__)

TRAINABLE_REPORT = "trainable_parameters.txt"
IMPORT_HEADS = ("text", "zeroshot")  # checkpoints.import_head: an imported model's own text tower, or zero-shot head


@dataclass
class Endpoints:
    """The checkpoints WiSE-FT interpolates between (either may be missing when a stage runs alone)."""

    zeroshot: Path | None = None
    finetuned: Path | None = None


def prompt_templates(ctx: RunContext, data: TaskData | None = None):
    """``finetune.templates`` (``coop``: the data set's CoOp/CLIPFit prompt), else the data config's or the set's
    (``data``: the set the head is for; default the training set)."""
    chosen = ctx.method.templates
    if chosen == "coop":
        return coop_templates([hydra_choice("data"), ctx.cfg.data.get("name")])
    return resolve_templates(chosen or ctx.cfg.data.templates or (data or ctx.task().train).templates)


def head_classes(ctx: RunContext) -> TaskData:
    """The set a head built without fine-tuning is for: the training set when this run fine-tunes, else the
    reference eval set (built untransformed: only its class names and prompts are read, nothing is decoded)."""
    if "finetune" in ctx.cfg.stages:
        return ctx.task().train
    return instantiate(ctx.cfg.eval.datasets[ctx.cfg.eval.reference])(transform=None)


def zeroshot_model(ctx: RunContext, data: TaskData | None = None) -> tuple[ImageClassifier, CheckpointMeta]:
    """The zero-shot model: ``model.pretrained`` weights with a head from the prompts of ``data`` (default: the
    training set)."""
    bundle = ctx.models.bundle()
    data = data or ctx.task().train
    templates = prompt_templates(ctx, data)
    method = ctx.method
    if method.head == "text":  # the prompts exactly as the method writes them during training
        head = build_text_head(bundle.model, bundle.tokenizer, data.classnames, templates)
    else:
        head = build_zeroshot_head(bundle.model, bundle.tokenizer, data.classnames, templates)
    classifier = ImageClassifier(bundle.model, head, keep_text=method.keeps_text).to(ctx.device)
    meta = CheckpointMeta(
        arch=bundle.arch, pretrained=bundle.pretrained, classnames=list(data.classnames),
        templates=[template_text(t) for t in templates],
        preprocess=dict(getattr(bundle.model.visual, "preprocess_cfg", {}) or {}),
        keep_text=method.keeps_text, head=method.head, method="zeroshot", dataset=ctx.cfg.data.name,
        seed=ctx.seed, precision=ctx.precision, config=OmegaConf.to_container(ctx.cfg, resolve=True))
    return classifier, meta


def describe(ctx: RunContext) -> tuple[ImageClassifier, CheckpointMeta]:
    """The zero-shot model with the method's trainable entries marked; writes trainable_parameters.txt."""
    classifier, meta = zeroshot_model(ctx)
    trainable = select_trainable(classifier, ctx.method.trainable)
    write_trainable_report(classifier, ctx.run_dir / TRAINABLE_REPORT)
    return classifier, meta.replace(trainable=trainable)


def finetune(ctx: RunContext) -> Endpoints:
    """Save the zero-shot checkpoint, run the method, score the held-out split, save the fine-tuned checkpoint."""
    classifier, meta = describe(ctx)
    zeroshot = save_checkpoint(ctx.checkpoint_dir / "zeroshot", classifier, meta.replace(trainable=[]))
    if ctx.resume is not None:  # planned and checked before the run started (pipeline/guards.py)
        adopt(ctx.resume, ctx.checkpoint_dir)
    job = FinetuneJob(
        model=classifier, bundle=ctx.models.bundle(), train_data=ctx.task().train, precision=ctx.precision,
        seed=ctx.seed, optimizer_factory=optimizer_factory(ctx.cfg.optimizer, ctx.device),
        scheduler_factory=instantiate(ctx.cfg.scheduler), checkpoint_dir=training_dir(ctx.resume, ctx.checkpoint_dir),
        meta=meta.replace(method=ctx.method.name), num_workers=ctx.data_workers,
        resume=ctx.resume is not None,
        feature_cache=feature_cache_path(ctx), log_metrics=ctx.logger.log)
    model = ctx.method.run(job)
    metrics = {}
    holdout = ctx.holdout_suite()
    if holdout is not None:
        metrics = {f"{HOLDOUT}/top1": evaluate(model, holdout, batch_size=ctx.cfg.eval.batch_size,
                                               precision=ctx.precision, progress=False)[f"{HOLDOUT}/top1"]}
        log.info("Held-out top-1 of the fine-tuned model: %.2f%%", 100 * metrics[f"{HOLDOUT}/top1"])
        ctx.logger.summary(metrics)
    finetuned = save_checkpoint(ctx.checkpoint_dir / "finetuned", model,
                                job.meta.replace(epoch=ctx.method.epochs, metrics=metrics))
    log.info("Fine-tuned checkpoint: %s", finetuned)
    return Endpoints(zeroshot, finetuned)


def optimizer_factory(cfg: DictConfig, device: torch.device) -> Callable[..., torch.optim.Optimizer]:
    """The ``optimizer`` node as a partial; ``fused: auto`` is torch's fused kernel on CUDA (one kernel per step for
    every parameter instead of several per tensor), and torch's default elsewhere (torch's fused CPU AdamW differs
    from it by an ulp after a few steps, which would move every result recorded on CPUs)."""
    options = OmegaConf.to_container(cfg, resolve=True)
    if options.get("fused") == "auto":
        options["fused"] = True if device.type == "cuda" else None
    return instantiate(options)


def feature_cache_path(ctx: RunContext) -> Path | None:
    if not ctx.method.caches_features:
        return None
    bundle = ctx.models.bundle()
    key = digest(bundle.arch, weights_identity(bundle.pretrained), OmegaConf.to_yaml(ctx.cfg.data, resolve=True),
                 ctx.cfg.seed, repr(bundle.preprocess_val), ctx.precision)
    return Path(ctx.cfg.paths.cache_dir) / "features" / f"{key}.safetensors"


def given_or_produced(ctx: RunContext, name: str, head_from: Path | None = None) -> Path | None:
    """``checkpoints.<name>`` when given (an open_clip file is imported first), else this run's own
    ``checkpoints/<name>`` when it exists."""
    configured = ctx.cfg.checkpoints.get(name)
    if configured:
        path = Path(str(configured))
        return imported(ctx, name, path, head_from) if is_open_clip_source(path) else path
    produced = ctx.checkpoint_dir / name
    return produced if (produced / WEIGHTS_FILE).is_file() else None


def imported(ctx: RunContext, name: str, source: Path, head_from: Path | None) -> Path:
    """An open_clip file (``epoch_N.pt``, a state dict, an export) as the wiseft-lab checkpoint ``checkpoints/<name>``
    of this run: ``model.arch``, the head copied from ``head_from`` or else built from the file's own text tower
    for :func:`head_classes` (the method's head kind)."""
    if head_from is not None:
        options = {"head_from": head_from}
    else:
        data = head_classes(ctx)
        options = {"classnames": list(data.classnames), "templates": prompt_templates(ctx, data),
                   "head": ctx.method.head, "keep_text": ctx.method.keeps_text}
    out = import_open_clip_checkpoint(source, ctx.checkpoint_dir / name, ctx.cfg.model.arch,
                                      tokenizer=ctx.cfg.model.get("tokenizer"), **options)
    log.info("Imported the open_clip checkpoint %s as %s", source, out)
    return out


def zeroshot_only(ctx: RunContext) -> Endpoints:
    """``stages=[evaluate]`` without checkpoints: the zero-shot model of ``model.pretrained``, its head built for the
    reference eval set's classes, saved as ``checkpoints/zeroshot`` (what the run evaluated, reusable later)."""
    classifier, meta = zeroshot_model(ctx, head_classes(ctx))
    path = save_checkpoint(ctx.checkpoint_dir / "zeroshot", classifier, meta.replace(dataset=ctx.cfg.eval.reference))
    log.info("No checkpoints given: evaluating the zero-shot model of model.pretrained=%s", ctx.cfg.model.pretrained)
    return Endpoints(zeroshot=path)


def endpoints(ctx: RunContext) -> Endpoints:
    """The given or produced endpoints; ``checkpoints.import_head=zeroshot`` gives an imported fine-tuned model the
    zero-shot checkpoint's head. Evaluating alone with none: the zero-shot model (:func:`zeroshot_only`)."""
    zeroshot = given_or_produced(ctx, "zeroshot")
    head = ctx.cfg.checkpoints.get("import_head") or "text"
    if head not in IMPORT_HEADS or (head == "zeroshot" and zeroshot is None):
        raise ConfigError(f"checkpoints.import_head={head!r}: one of {list(IMPORT_HEADS)} (zeroshot needs "
                          f"checkpoints.zeroshot)")
    head_from = zeroshot if head == "zeroshot" else None
    ends = Endpoints(zeroshot, given_or_produced(ctx, "finetuned", head_from))
    if ends.zeroshot is None and ends.finetuned is None and list(ctx.cfg.stages) == ["evaluate"]:
        return zeroshot_only(ctx)
    return ends
