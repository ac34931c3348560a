"""Evaluation sets with classes of their own: scored with a head built from their class names.

Base-to-novel's novel set (``extras["rebuild_head"]``, :mod:`wiseft_lab.data.class_subsets`) is classified by a
head built through the evaluated model's text tower; the model's own head is restored afterwards. The
harmonic mean ``HM = 2 B N / (B + N)`` of base and novel top-1 is added when the suite has both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from wiseft_lab.data.class_subsets import REBUILD_HEAD
from wiseft_lab.evaluation.metrics import harmonic_mean
from wiseft_lab.evaluation.suite import AVG_SHIFTS, EvalSuite, average_shifts, evaluate

HM = "hm"


def evaluate_with_set_heads(model: nn.Module, suite: EvalSuite, *,
                            head_for: Callable[[Sequence[str]], nn.Module] | None = None, **options) -> dict:
    """:func:`~wiseft_lab.evaluation.suite.evaluate`, but sets flagged ``rebuild_head`` get their own head.

    ``head_for(classnames)`` builds that head (through the model's text tower). ``avg_shifts`` is
    recomputed over the whole suite (each shift's primary metric), and ``hm/top1`` is added when the suite has a
    base and a novel set.
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
        scores = {k: v for k, v in metrics.items() if not k.startswith((f"{AVG_SHIFTS}/", "n/"))}
        metrics = {**scores, **average_shifts(suite, scores), **{f"n/{n}": metrics[f"n/{n}"] for n in suite.sets}}
    roles = {s.data.extras.get("b2n"): name for name, s in suite.sets.items()}
    if "base" in roles and "novel" in roles:
        metrics[f"{HM}/top1"] = harmonic_mean(metrics[f"{roles['base']}/top1"], metrics[f"{roles['novel']}/top1"])
    return metrics
