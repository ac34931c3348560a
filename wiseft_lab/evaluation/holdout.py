"""The held-out split as one more column group of every result row, and the temperature it calibrates.

Every evaluated model is also scored on the held-out split (``holdout/top1``, ``n/holdout``, its calibration
columns): what choosing alpha without the shifts' labels reads (:mod:`wiseft_lab.evaluation.alpha_selection`).
Its logits fit the model's temperature (Guo et al. 2017), which the test sets' ``_ts`` columns then use: the
temperature never sees a test set.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from wiseft_lab.evaluation.calibration import Calibration, fit_temperature
from wiseft_lab.evaluation.features import FeatureCache
from wiseft_lab.evaluation.metrics import top1
from wiseft_lab.evaluation.suite import HOLDOUT, EvalSuite, projected_logits, set_logits

TEMPERATURE = "temperature"  # the result row's column: the temperature fitted on the held-out split


def score_holdout(model: nn.Module, holdout: EvalSuite, calibration: Calibration, *, batch_size: int = 256,
                  precision: str = "fp32", features: FeatureCache | None = None
                  ) -> tuple[dict[str, float], Calibration]:
    """``holdout/*`` columns and ``temperature`` of ``model``, and ``calibration`` with that temperature.

    With ``features``, a model whose image tower was seen before is scored on its kept outputs (an lc sweep).
    """
    prepared = holdout.sets[HOLDOUT]
    was_training = model.training
    model.eval()
    if features is not None:
        features.bind(model)
    try:
        raw, labels = set_logits(model, prepared, batch_size=batch_size, precision=precision, progress=False,
                                 features=features)
    finally:
        model.train(was_training)
    _, logits = projected_logits(raw, prepared.data)
    fitted = dataclasses.replace(calibration, temperature=fit_temperature(logits, labels))
    metrics = {f"{HOLDOUT}/top1": top1(logits, labels), f"n/{HOLDOUT}": len(labels),
               **fitted.columns(HOLDOUT, logits, labels), TEMPERATURE: fitted.temperature}
    return metrics, fitted
