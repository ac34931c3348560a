"""The pipeline: finetune -> merge -> evaluate, each stage runnable alone from saved checkpoints.

Thin on purpose: it turns the composed config into calls of models/, data/, training/, merging,
evaluation/ and reporting/, and keeps every artifact in the run directory.
"""

from __future__ import annotations

import hashlib
import logging
import random
import signal
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.layouts import check_data_layouts
from wiseft_lab.data.splits import train_and_holdout
from wiseft_lab.evaluation.suite import HOLDOUT, EvalSuite, evaluate
from wiseft_lab.io import atomic_write_text, write_csv, write_jsonl
from wiseft_lab.merging import MergeContext, ModelEntry, cached_loader, get_merge
from wiseft_lab.models.checkpoint import (
    WEIGHTS_FILE,
    classifier_from_state,
    load_state_dict,
    read_meta,
    save_checkpoint,
)
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.factory import ClipBundle, create_clip, with_eval_preprocess
from wiseft_lab.models.zeroshot import build_zeroshot_head, fill_template, resolve_templates
from wiseft_lab.precision import resolve_precision
from wiseft_lab.reporting.loggers import create_logger
from wiseft_lab.reporting.plots import wiseft_curve
from wiseft_lab.reporting.run_info import write_run_info
from wiseft_lab.reporting.soups import soup_report
from wiseft_lab.reporting.tables import result_row, summary_markdown, summary_metrics
from wiseft_lab.soups import pool_group
from wiseft_lab.training.base_to_novel import evaluate_with_set_heads, subsample_classes
from wiseft_lab.training.loop import LoopConfig, find_interrupted_run, latest_epoch_dir, mark_resumed
from wiseft_lab.training.methods import (
    TRAINABLE,
    FinetuneJob,
    get_method,
    method_info,
    select_trainable,
    write_trainable_report,
)
from wiseft_lab.training.text_head import build_text_head, coop_templates, finalize_text_head

log = logging.getLogger(__name__)

STAGES = ("finetune", "merge", "evaluate")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_dir_from_hydra(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def sweep_group() -> str | None:
    """Jobs of one multirun share a W&B group: the sweep directory's name."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return None


def digest(*parts: Any) -> str:
    return hashlib.sha1("\n".join(map(str, parts)).encode()).hexdigest()[:16]


def weights_identity(path: str | None) -> str:
    """Tag, or path + size + mtime for local files (a changed file invalidates cached features)."""
    if path and Path(path).exists():
        stat = Path(path).stat()
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    return str(path)


class Pipeline:
    def __init__(self, cfg: DictConfig, run_dir: Path, logger):
        unknown = set(cfg.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"Unknown stages {sorted(unknown)}; choose from {list(STAGES)}")
        self.cfg = cfg
        self.run_dir = run_dir
        self.logger = logger
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.ckpt_dir = run_dir / "checkpoints"
        self._bundle: ClipBundle | None = None
        self._skeleton: ImageClassifier | None = None
        self._holdout_suite: EvalSuite | None = None
        self._skeleton_meta: dict[str, Any] = {}
        self._template: Path | None = None  # the checkpoint merged models share (soups: one of the pool)
        self.rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ building blocks
    def bundle(self, arch: str | None = None) -> ClipBundle:
        """The open_clip model: ``model.pretrained`` weights, or random weights of ``arch`` (a skeleton)."""
        if self._bundle is None:
            m = self.cfg.model
            self._bundle = create_clip(arch or m.arch, None if arch else m.pretrained, device=self.device,
                                       cache_dir=m.get("cache_dir"))
        return self._bundle

    def _splits(self, transform) -> tuple[TaskData, TaskData | None]:
        data = subsample_classes(instantiate(self.cfg.data.dataset)(transform=transform), self.cfg.data.get("classes"))
        return train_and_holdout(data, float(self.cfg.data.get("holdout_fraction") or 0.0), self.cfg.data.get("shots"),
                                 seed=int(self.cfg.seed), holdout_seed=int(self.cfg.data.get("holdout_seed", 0)))

    def train_data(self, transform=None) -> TaskData:
        """The fine-tuning set: the data config minus the held-out split, optionally k-shot."""
        return self._splits(transform)[0]

    def zeroshot_classifier(self) -> tuple[ImageClassifier, dict]:
        """The zero-shot model: ``model.pretrained`` weights with a head from the training set's prompts."""
        bundle = self.bundle()
        data = self.train_data()
        templates = self._templates(data)
        info = method_info(self.cfg.finetune.method)
        if info.head == "text":  # the prompts exactly as the method writes them during training
            head = build_text_head(bundle.model, bundle.tokenizer, data.classnames, templates)
        else:
            head = build_zeroshot_head(bundle.model, bundle.tokenizer, data.classnames, templates)
        keep_text = bool(self.cfg.finetune.get("keep_text", False)) or info.needs_text
        classifier = ImageClassifier(bundle.model, head, keep_text=keep_text).to(self.device)
        meta = {
            "arch": bundle.arch,
            "pretrained": bundle.pretrained,
            "classnames": list(data.classnames),
            "templates": [fill_template(t, "{}") for t in templates],
            "preprocess": dict(getattr(bundle.model.visual, "preprocess_cfg", {}) or {}),
            "keep_text": keep_text,
            "head": info.head,
            "method": "zeroshot",
            "dataset": self.cfg.data.name,
            "seed": int(self.cfg.seed),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }
        return classifier, meta

    def _templates(self, data: TaskData):
        """``finetune.templates`` (``coop``: the data set's CoOp/CLIPFit prompt), else the data config's or set's."""
        chosen = self.cfg.finetune.get("templates")
        if chosen == "coop":
            choice = HydraConfig.get().runtime.choices.get("data") if HydraConfig.initialized() else None
            return coop_templates([choice, self.cfg.data.get("name")])
        return resolve_templates(chosen or self.cfg.data.templates or data.templates)

    def load_weights(self, model: ImageClassifier, state: dict) -> ImageClassifier:
        """Load a (possibly merged) state; a head derived from the text tower is rebuilt from the loaded tower."""
        model.load_state_dict(state)
        finalize_text_head(model, self._skeleton_meta, self.bundle().tokenizer)
        return model

    def skeleton(self, checkpoint: Path) -> ImageClassifier:
        """One classifier of the checkpoint's architecture; every evaluated model's weights load into it."""
        if self._skeleton is None:
            meta = read_meta(checkpoint)
            self._skeleton_meta = meta
            if self._bundle is None:  # a checkpoint evaluated or merged on its own: its own eval preprocessing
                self._bundle = with_eval_preprocess(self.bundle(meta["arch"]), meta.get("preprocess"))
            state = load_state_dict(checkpoint)
            self._skeleton = classifier_from_state(self._bundle.model, state, meta).to(self.device)
        return self._skeleton

    def holdout_suite(self) -> EvalSuite | None:
        if self._holdout_suite is None:
            held = self._splits(None)[1]
            if held is None:
                return None
            transform = self.bundle().preprocess_val
            # the split depends on data.holdout_seed, not on the training seed: a sweep's jobs share one cache entry
            key = digest(HOLDOUT, OmegaConf.to_yaml(self.cfg.data, resolve=True),
                         self.cfg.data.get("holdout_seed", 0), repr(transform))
            self._holdout_suite = EvalSuite.build(
                HOLDOUT, {HOLDOUT: lambda transform: self._splits(transform)[1]}, transform,
                cache_keys={HOLDOUT: key}, max_cache_bytes=float(self.cfg.eval.cache_max_gb) * 1e9,
                batch_size=self.cfg.eval.batch_size, num_workers=self.cfg.eval.num_workers)
        return self._holdout_suite

    def score_holdout(self, model: ImageClassifier) -> float:
        metrics = evaluate(model, self.holdout_suite(), batch_size=self.cfg.eval.batch_size,
                           precision=self.precision, progress=False)
        return metrics[f"{HOLDOUT}/top1"]

    def build_suite(self) -> EvalSuite:
        ev = self.cfg.eval
        transform = self.bundle().preprocess_val
        builders = {name: instantiate(ds_cfg) for name, ds_cfg in ev.datasets.items()}
        keys = ({name: digest(OmegaConf.to_yaml(c, resolve=True), repr(transform)) for name, c in ev.datasets.items()}
                if ev.cache else None)
        return EvalSuite.build(ev.reference, builders, transform, cache_keys=keys,
                               max_cache_bytes=float(ev.cache_max_gb) * 1e9, batch_size=ev.batch_size,
                               num_workers=ev.num_workers)

    # ------------------------------------------------------------------ stages
    def describe(self) -> ImageClassifier:
        """Build the zero-shot model, mark the method's trainable entries, write trainable_parameters.txt."""
        classifier, self.meta = self.zeroshot_classifier()
        self.meta["trainable"] = select_trainable(classifier, TRAINABLE[self.cfg.finetune.method])
        write_trainable_report(classifier, self.run_dir / "trainable_parameters.txt")
        return classifier

    def finetune(self) -> None:
        cfg, ft = self.cfg, self.cfg.finetune
        classifier = self.describe()
        save_checkpoint(self.ckpt_dir / "zeroshot", classifier, {**self.meta, "trainable": []})
        resume = self._resume_dir()
        job = FinetuneJob(
            model=classifier,
            bundle=self.bundle(),
            train_data=self.train_data,
            loop=LoopConfig(epochs=ft.epochs, grad_accum_steps=ft.grad_accum_steps,
                            clip_grad_norm=ft.clip_grad_norm, precision=self.precision, seed=int(cfg.seed),
                            keep_checkpoints=ft.keep_checkpoints),
            optimizer_factory=instantiate(cfg.optimizer),
            scheduler_factory=instantiate(cfg.scheduler),
            checkpoint_dir=resume or self.ckpt_dir,
            meta={**self.meta, "method": ft.method},
            batch_size=ft.batch_size,
            num_workers=cfg.data.num_workers,
            label_smoothing=ft.label_smoothing,
            resume=resume is not None,
            feature_cache=self._feature_cache_path(),
            log_metrics=self.logger.log,
            options=OmegaConf.to_container(ft, resolve=True),
        )
        model = get_method(ft.method)(job)
        metrics = {}
        if self.holdout_suite() is not None:
            metrics[f"{HOLDOUT}/top1"] = self.score_holdout(model)
            log.info("Held-out top-1 of the fine-tuned model: %.2f%%", 100 * metrics[f"{HOLDOUT}/top1"])
            self.logger.summary(metrics)
        save_checkpoint(self.ckpt_dir / "finetuned", model,
                        {**job.meta, "epoch": ft.epochs, "metrics": metrics})
        if resume is not None and resume != self.ckpt_dir:  # the interrupted run is finished now: not resumable
            mark_resumed(resume, self.run_dir)
        log.info("Fine-tuned checkpoint: %s", self.ckpt_dir / "finetuned")

    def _resume_dir(self) -> Path | None:
        """Where to continue training from, or None.

        ``resume=<run dir>`` continues that run's per-epoch checkpoints (in place). ``resume=true`` uses this
        run's own checkpoints if it has any (a re-used ``hydra.run.dir``), else the newest earlier run of the
        same task whose fine-tuning never finished.
        """
        resume = self.cfg.resume
        if resume in (None, False, "false"):
            return None
        if resume not in (True, "true"):
            target = Path(str(resume)) / "checkpoints"
            if latest_epoch_dir(target) is None:
                raise FileNotFoundError(f"resume={resume}: no finished epoch checkpoint under {target}")
            return target
        if latest_epoch_dir(self.ckpt_dir) is not None or sweep_group() is not None:
            return self.ckpt_dir  # in a multirun, re-use the sweep dir (hydra.sweep.dir=...) to resume each job
        interrupted = find_interrupted_run(self.run_dir.parent, exclude=self.run_dir)
        if interrupted is not None:
            log.info("resume=true: continuing the interrupted run %s", interrupted)
            return interrupted / "checkpoints"
        log.warning("resume=true but no interrupted run of task %r found: training from scratch", self.cfg.task_name)
        return self.ckpt_dir

    def _feature_cache_path(self) -> Path | None:
        if not method_info(self.cfg.finetune.method).caches_features:
            return None
        bundle = self.bundle()
        key = digest(bundle.arch, weights_identity(bundle.pretrained), OmegaConf.to_yaml(self.cfg.data, resolve=True),
                     self.cfg.seed, repr(bundle.preprocess_val), self.precision)
        return Path(self.cfg.paths.cache_dir) / "features" / f"{key}.safetensors"

    def endpoint(self, name: str) -> Path | None:
        configured = self.cfg.checkpoints.get(name)
        if configured:
            return Path(str(configured))
        produced = self.ckpt_dir / name
        return produced if (produced / WEIGHTS_FILE).is_file() else None

    def merge(self) -> list[ModelEntry]:
        """Endpoints (given or produced) plus what ``merge.kind`` makes of them."""
        zeroshot, finetuned = self.endpoint("zeroshot"), self.endpoint("finetuned")
        cache: dict[Path, dict] = {}
        entries = [ModelEntry(name, alpha, cached_loader(path, cache))
                   for name, alpha, path in (("zeroshot", 0.0, zeroshot), ("finetuned", 1.0, finetuned)) if path]
        if "merge" in self.cfg.stages:
            template = zeroshot or finetuned
            ctx = MergeContext(self.cfg.merge, zeroshot, finetuned, self.run_dir, self.device,
                               log_metrics=self.logger.log, run_cfg=self.cfg, precision=self.precision,
                               scorer_for=self._state_scorer, skeleton=self.skeleton, holdout=self._holdout_set)
            merged = get_merge(self.cfg.merge.kind)(ctx)
            self._template = template = template or ctx.template  # soups: a checkpoint of their pool
            self._save_merged(merged, template)
            entries += merged
        if not entries:
            raise FileNotFoundError(
                "Nothing to evaluate or merge: run the finetune stage, or pass checkpoints.zeroshot=<dir> and/or "
                "checkpoints.finetuned=<dir> (directories with model.safetensors + meta.json).")
        return entries

    def _holdout_set(self):
        suite = self.holdout_suite()
        return suite.sets[HOLDOUT] if suite is not None else None

    def _state_scorer(self, template: Path):
        def score(state: dict) -> float:
            model = self.load_weights(self.skeleton(template), state)
            return self.score_holdout(model)
        return score

    def _save_merged(self, entries: list[ModelEntry], template: Path | None) -> None:
        for entry in entries:
            if entry.save_as:
                model = self.load_weights(self.skeleton(template), entry.weights())
                save_checkpoint(self.ckpt_dir / entry.save_as, model,
                                {**read_meta(template), "method": entry.save_as, "merge": entry.extra})

    def evaluate(self, entries: list[ModelEntry]) -> None:
        model = self.skeleton(self.endpoint("zeroshot") or self.endpoint("finetuned") or self._template)
        suite = self.build_suite()
        endpoints: dict[float, dict] = {}
        for entry in entries:
            if entry.model == "wiseft" and entry.alpha in endpoints:
                metrics = endpoints[entry.alpha]  # alpha 0 / 1 are the endpoints bit for bit
            else:
                subject = entry.module() if entry.module is not None else self.load_weights(model, entry.weights())
                tag = entry.tag or (entry.model if entry.model != "wiseft" else f"wiseft_{entry.alpha:g}")
                metrics = evaluate_with_set_heads(
                    subject, suite, head_for=self._text_head_builder(model) if entry.module is None else None,
                    batch_size=self.cfg.eval.batch_size, precision=self.precision,
                    predictions_dir=self.run_dir / "predictions" / tag if self.cfg.eval.save_predictions else None)
                if entry.model in ("zeroshot", "finetuned"):
                    endpoints[entry.alpha] = metrics
            row = result_row(entry.model, entry.alpha, metrics, **entry.extra)
            self.rows.append(row)
            log.info("%s%s: %s", entry.model, f" alpha={entry.alpha:g}" if entry.model == "wiseft" else "",
                     "  ".join(f"{k[:-5]} {100 * v:.1f}" for k, v in row.items() if k.endswith("/top1")))
            self._write_results(suite)
        self.suite = suite

    def _text_head_builder(self, model: ImageClassifier):
        """Heads for eval sets with their own classes (base-to-novel's novel set), from the model's text tower."""
        templates = self._skeleton_meta["templates"]
        return lambda classnames: build_text_head(model.clip, self.bundle().tokenizer, classnames, templates)

    def _write_results(self, suite: EvalSuite) -> None:
        """Rewritten after every model, atomically: a crash keeps every finished evaluation."""
        write_jsonl(self.run_dir / "results.jsonl", self.rows)
        write_csv(self.run_dir / "results.csv", self.rows)
        atomic_write_text(self.run_dir / "summary.md",
                          summary_markdown(self.rows, suite.reference, suite.shifts, title=self.cfg.task_name))

    def report(self) -> dict[str, Any]:
        if not self.rows:
            return {}
        reference, shifts = self.suite.reference, self.suite.shifts
        outputs: dict[str, Any] = {"summary": self.run_dir / "summary.md", "results": self.run_dir / "results.jsonl"}
        if shifts and any(r["model"] == "wiseft" for r in self.rows):
            outputs["plot"] = wiseft_curve(self.rows, reference, self.run_dir / "wiseft_curve.png",
                                           title=f"WiSE-FT: {self.cfg.task_name}")
            self.logger.log_image("wiseft_curve_png", outputs["plot"])
        self.logger.log_results(self.rows, reference)
        self.logger.summary(summary_metrics(self.rows))
        outputs.update(soup_report(self.rows, reference, shifts, self.run_dir, self.logger, title=self.cfg.task_name))
        return outputs

    def run(self) -> dict[str, Any]:
        stages = list(self.cfg.stages)
        if not stages:
            self.describe()
            log.info("stages=[]: dry run, wrote %s", self.run_dir / "trainable_parameters.txt")
            return {"trainable": self.run_dir / "trainable_parameters.txt"}
        check_data_layouts(self.cfg, stages)  # missing or misplaced data fails here, before any training
        if "finetune" in stages:
            self.finetune()
        if "merge" in stages or "evaluate" in stages:
            entries = self.merge()
            if "evaluate" in stages:
                self.evaluate(entries)
        return self.report()


def _raise_on_sigterm():
    """Turn SIGTERM (a scheduler's pre-emption, ``kill``) into an exception, so a killed job still writes its
    error.log and finishes its W&B run; returns the previous handler (None off the main thread)."""
    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        return None


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job: set up the run dir and logger, run the pipeline, always close the logger."""
    run_dir = run_dir_from_hydra(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(int(cfg.seed))
    write_run_info(run_dir, OmegaConf.to_yaml(cfg, resolve=True), int(cfg.seed),
                   {"run_dir": str(run_dir), "stages": list(cfg.stages)})
    logger = None
    previous_handler = _raise_on_sigterm()
    try:
        logger = create_logger(cfg.get("logger"), run_dir, OmegaConf.to_container(cfg, resolve=True),
                               group=sweep_group() or pool_group(cfg), name=f"{cfg.task_name}-{run_dir.name}")
        outputs = Pipeline(cfg, run_dir, logger).run()
    except BaseException as err:
        atomic_write_text(run_dir / "error.log", "".join(traceback.format_exception(err)))
        log.error("Run failed: %s\n(full traceback: %s)", err, run_dir / "error.log")
        if logger is not None:
            logger.close(exit_code=1)
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    logger.close(exit_code=0)
    outputs["run_dir"] = run_dir
    outputs["wandb"] = logger.directory
    outputs["wandb_url"] = logger.url
    return outputs
