"""Evaluation sets with classes of their own: scored with a head built from their class names.

Base-to-novel's novel set (``extras["rebuild_head"]``, :mod:`wiseft_lab.data.class_subsets`) is classified by a
head built through the evaluated model's text tower; the model's own head is restored afterwards. The
harmonic mean ``HM = 2 B N / (B + N)`` of base and novel top-1 is added when the suite has both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from wiseft_lab.data.class_subsets import REBUILD_HEAD
from wiseft_lab.evaluation.metrics import average_over, harmonic_mean
from wiseft_lab.evaluation.suite import AVG_SHIFTS, EvalSuite, evaluate

HM = "hm"


def evaluate_with_set_heads(model: nn.Module, suite: EvalSuite, *,
                            head_for: Callable[[Sequence[str]], nn.Module] | None = None, **options) -> dict:
    """:func:`~wiseft_lab.evaluation.suite.evaluate`, but sets flagged ``rebuild_head`` get their own head.

    ``head_for(classnames)`` builds that head (through the model's text tower). ``avg_shifts/top1`` is recomputed
    over the whole suite, and ``hm/top1`` is added when the suite has a base and a novel set.
    """
    own = {name: s for name, s in suite.sets.items() if s.data.extras.get(REBUILD_HEAD)}
    if not own:
        metrics = evaluate(model, suite, **options)
    else:
        if head_for is None:
            raise ValueError(f"Eval sets {sorted(own)} need a head built from their class names, but no head "
                             "builder was given.")
        metrics = {}
        rest = {name: s for name, s in suite.sets.items() if name not in own}
        if rest:
            reference = suite.reference if suite.reference in rest else next(iter(rest))
            metrics.update(evaluate(model, EvalSuite(reference, rest), **options))
        for name, prepared in own.items():
            original = model.head
            model.head = head_for(prepared.data.classnames)
            try:
                metrics.update(evaluate(model, EvalSuite(name, {name: prepared}), **options))
            finally:
                model.head = original
        metrics.pop(f"{AVG_SHIFTS}/top1", None)
        ordered = {f"{n}/top1": metrics[f"{n}/top1"] for n in suite.sets}
        ordered.update({f"n/{n}": metrics[f"n/{n}"] for n in suite.sets})
        ordered.update({k: v for k, v in metrics.items() if k not in ordered})  # e.g. the calibration columns
        avg = average_over(ordered, suite.shifts)
        if avg is not None:
            ordered[f"{AVG_SHIFTS}/top1"] = avg
        metrics = ordered
    roles = {s.data.extras.get("b2n"): name for name, s in suite.sets.items()}
    if "base" in roles and "novel" in roles:
        metrics[f"{HM}/top1"] = harmonic_mean(metrics[f"{roles['base']}/top1"], metrics[f"{roles['novel']}/top1"])
    return metrics
