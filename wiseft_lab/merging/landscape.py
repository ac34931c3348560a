"""The error landscape (model soups, Wortsman et al. 2022, Sec. 3.2 and Fig. 2): ``merge=landscape``.

The plane through three checkpoints (``origin``: by default the zero-shot model; the first two models of ``pool``,
e.g. two learning rates or two seeds; :class:`~wiseft_lab.weight_space.landscape.Plane`), a ``resolution`` x
``resolution`` grid over it, and at every grid point the training loss and error on a fixed subset of the
fine-tuning split (``train_examples``, eval transform, the same images at every point) and the test error of every
eval set (the decoded sets are reused: forward passes only). Under ``<run>/landscape/``: ``grid.csv`` (rewritten
after every grid row, so a killed run keeps what it measured), ``plane.json`` (the models' coordinates) and one
contour plot per quantity (PNG + PDF) with the three models marked. The three models are then evaluated as usual.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from wiseft_lab.evaluation.metrics import top1
from wiseft_lab.evaluation.suite import AVG_SHIFTS, EvalSuite, evaluate, projected_logits, set_logits
from wiseft_lab.io import write_csv, write_json
from wiseft_lab.merging.pool import ingredient_entries, resolve_pool, resolve_pretrained
from wiseft_lab.merging.registry import MergeContext, MergeResult, MergeStrategy, ModelEntry, register_merge
from wiseft_lab.models.checkpoint import load_state_dict
from wiseft_lab.reporting.landscape import contour_figure
from wiseft_lab.weight_space.landscape import Plane

log = logging.getLogger(__name__)

OUT_DIR = "landscape"
TRAIN = "train"


def error_columns(metrics: dict[str, float], suite: EvalSuite) -> dict[str, float]:
    """``<set>/error = 1 - <set>/top1`` for every set, and the shifts' average error."""
    errors = {f"{name}/error": 1.0 - metrics[f"{name}/top1"] for name in suite.sets}
    shifted = [errors[f"{name}/error"] for name in suite.shifts]
    return {**errors, **({f"{AVG_SHIFTS}/error": sum(shifted) / len(shifted)} if shifted else {})}


@torch.no_grad()
def train_columns(model: torch.nn.Module, train: EvalSuite, batch_size: int, precision: str) -> dict[str, float]:
    """Cross-entropy and error of ``model`` on the fixed training subset."""
    prepared = train.sets[TRAIN]
    model.eval()
    raw, labels = set_logits(model, prepared, batch_size=batch_size, precision=precision, progress=False)
    _, logits = projected_logits(raw, prepared.data)
    return {f"{TRAIN}/loss": float(F.cross_entropy(logits.double(), labels)),
            f"{TRAIN}/error": 1.0 - top1(logits, labels)}


@register_merge("landscape")
@dataclass(kw_only=True)
class Landscape(MergeStrategy):
    """Train loss and test errors on the plane through ``origin`` and the first two models of ``pool``."""

    pool: Any = None               # two checkpoints (a list, a glob or a multirun directory: its first two jobs)
    checkpoint: str = "finetuned"  # which checkpoint of each job
    origin: str | None = None      # theta_0; None: checkpoints.zeroshot, else the zeroshot beside the first model
    resolution: int = 21           # grid points per axis (Garipov et al.'s default)
    margin: float = 0.2            # the grid extends the models' bounding box by this fraction on each side
    train_examples: int = 512      # the fixed training subset the loss is measured on
    train_seed: int = 0
    exclude: list[str] = field(default_factory=list)  # keys held at the origin's value (not spanned)

    def run(self, ctx: MergeContext) -> MergeResult:
        pool, _ = resolve_pool(self.pool, str(self.checkpoint))
        if len(pool) < 2:
            raise ValueError(f"merge=landscape needs two models besides the origin; merge.pool={self.pool!r} gave "
                             f"{len(pool)}.")
        if len(pool) > 2:
            log.info("Landscape: using the first two of %d models (%s, %s)", len(pool), pool[0].name, pool[1].name)
        pool = pool[:2]
        origin = resolve_pretrained(self.origin, ctx.zeroshot, pool)
        names = ["zero-shot" if self.origin is None else "origin", pool[0].name, pool[1].name]
        plane = Plane.through(origin, pool[0].checkpoint, pool[1].checkpoint, exclude=list(self.exclude),
                              names=names)
        xs, ys = plane.grid(int(self.resolution), float(self.margin))
        out = ctx.run_dir / OUT_DIR
        write_json(out / "plane.json", {"origin": str(origin), "models": [str(i.checkpoint) for i in pool],
                                        "names": names, "coordinates": plane.coordinates, "xs": xs, "ys": ys,
                                        "train_examples": int(self.train_examples)})
        suite, train = ctx.suite(), ctx.train_subset(int(self.train_examples), int(self.train_seed))
        skeleton = ctx.models.skeleton(origin)
        rows: list[dict[str, float]] = []
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                model = ctx.models.load(skeleton, plane.point_state(x, y))
                metrics = evaluate(model, suite, batch_size=ctx.eval_batch_size, precision=ctx.precision,
                                   progress=False)
                rows.append({"i": i, "j": j, "x": x, "y": y,
                             **train_columns(model, train, ctx.eval_batch_size, ctx.precision),
                             **error_columns(metrics, suite)})
            write_csv(out / "grid.csv", rows)
            log.info("Landscape: grid row %d/%d done", j + 1, len(ys))
        marked = list(zip(names, plane.coordinates, strict=True))
        for key in (k for k in rows[0] if k.endswith(("/loss", "/error"))):
            contour_figure(rows, key, marked, out / f"{key.replace('/', '_')}.png", title=f"{key} on the plane")
        entries = [ModelEntry("zeroshot", 0.0, lambda: load_state_dict(origin)), *ingredient_entries(pool)]
        return MergeResult(entries, origin)
