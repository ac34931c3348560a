"""Calibration of a classifier's logits: ECE, NLL, Brier score, and temperature scaling (pure functions).

* ECE (top-label): confidence = the largest softmax probability, correct = its class is the label (ties: the lowest
  index, as ``argmax``). Examples are put in ``n_bins`` bins; ``ECE = (sum_b n_b / N * |acc_b - conf_b|^p)^(1/p)``
  with ``p = norm`` (1: the usual ECE of Naeini et al. 2015 / Guo et al. 2017; 2: the RMS variant).
  Model soups (Wortsman et al. 2022, calibration figure) report ECE "with equal-mass binning" (Roelofs et al.,
  "Mitigating bias in calibration error estimation", AISTATS 2022); the bin assignment here is that paper's code
  (google-research ``caltrain/bin_methods.py``): equal mass sorts the confidences and puts the example of rank r
  (0-based, of N) in bin ``floor(r * B / N)`` (ties in confidence: by example order); equal width puts a confidence
  in bin i when ``i / B <= conf < (i + 1) / B`` (1.0 in the last bin). The number of bins model soups used is not in
  its repository; 15 is caltrain's and Guo et al.'s default.
* NLL: the mean over examples of ``-log softmax(logits)[label]``.
* Brier score (Brier 1950): the mean over examples of ``sum_k (p_k - 1[k = label])^2``, in [0, 2] (Ovadia et al. 2019
  divide this by the number of classes; we do not).
* Temperature scaling (Guo et al. 2017): the single ``T > 0`` minimising the NLL of ``logits / T`` on held-out
  logits. ``NLL(logits / T)`` is convex in ``1 / T``, hence unimodal in ``log T``: a golden-section search on
  ``log T`` over ``bounds`` finds it deterministically (no randomness, no learning rate), in float64. The NLL is
  flat at its minimum, so T is resolved to about 1e-7 relative (the square root of float64's precision).

All functions take raw logits of shape (N, K) and integer labels of shape (N,). :class:`Calibration` names the
columns a result row gets per eval set: ``<set>/ece``, ``<set>/nll``, ``<set>/brier`` and, with a temperature
fitted on the held-out split, ``<set>/ece_ts``, ``<set>/nll_ts``, ``<set>/brier_ts`` (after temperature scaling).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BINNINGS = ("equal_mass", "equal_width")
N_BINS = 15
TEMPERATURE_BOUNDS = (1e-2, 1e2)
LOG_TEMPERATURE_TOLERANCE = 1e-10  # the search stops when log T is known to this width


def _check(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels):
        raise ValueError(f"Expected logits (N, K) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("Calibration of an empty set is undefined")
    return logits.detach().to("cpu", torch.float64), labels.detach().to("cpu", torch.long)


def bin_indices(confidences: torch.Tensor, n_bins: int = N_BINS, binning: str = "equal_mass") -> torch.Tensor:
    """The bin of every confidence (see the module docstring for both binnings)."""
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, not {binning!r}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if binning == "equal_width":
        edges = torch.arange(1, n_bins, dtype=torch.float64) / n_bins
        return (confidences.unsqueeze(1) >= edges).sum(dim=1)
    n = len(confidences)
    ranks = torch.empty(n, dtype=torch.long)
    ranks[torch.argsort(confidences, stable=True)] = torch.arange(n)
    return ranks * n_bins // n


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS,
                     binning: str = "equal_mass") -> list[dict[str, float]]:
    """The non-empty bins in order: ``count``, mean ``confidence`` and ``accuracy`` (a reliability diagram)."""
    logits, labels = _check(logits, labels)
    probs = torch.softmax(logits, dim=1)
    confidences, predictions = probs.max(dim=1)
    correct = (predictions == labels).to(torch.float64)
    bins = bin_indices(confidences, n_bins, binning)
    rows = []
    for b in range(n_bins):
        members = bins == b
        count = int(members.sum())
        if count:
            rows.append({"count": count, "confidence": float(confidences[members].mean()),
                         "accuracy": float(correct[members].mean())})
    return rows


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS,
                               binning: str = "equal_mass", norm: float = 1.0) -> float:
    """Top-label ECE with equal-mass (default, as model soups) or equal-width bins, in [0, 1]."""
    rows = reliability_bins(logits, labels, n_bins, binning)
    total = sum(r["count"] for r in rows)
    error = sum(r["count"] * abs(r["accuracy"] - r["confidence"]) ** norm for r in rows) / total
    return error ** (1.0 / norm)


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    logits, labels = _check(logits, labels)
    return float(F.cross_entropy(logits, labels))


def brier_score(logits: torch.Tensor, labels: torch.Tensor) -> float:
    logits, labels = _check(logits, labels)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(labels, probs.shape[1]).to(torch.float64)
    return float((probs - onehot).square().sum(dim=1).mean())


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if not temperature > 0:
        raise ValueError(f"The temperature must be positive, got {temperature}")
    return logits / temperature


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The ``T`` in ``bounds`` minimising ``NLL(logits / T)``: golden-section search on ``log T`` (deterministic).

    An optimum at a bound (e.g. every held-out example right: the NLL keeps falling as T -> 0) is returned as that
    bound, with a warning.
    """
    logits, labels = _check(logits, labels)
    low, high = (math.log(b) for b in bounds)
    if not low < high:
        raise ValueError(f"Temperature bounds must be increasing and positive, got {bounds}")

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    shrink = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = high - shrink * (high - low), low + shrink * (high - low)
    fc, fd = nll(c), nll(d)
    while high - low > LOG_TEMPERATURE_TOLERANCE:
        if fc < fd:
            high, d, fd = d, c, fc
            c = high - shrink * (high - low)
            fc = nll(c)
        else:
            low, c, fc = c, d, fd
            d = low + shrink * (high - low)
            fd = nll(d)
    temperature = math.exp((low + high) / 2.0)
    if min(abs(math.log(temperature) - math.log(b)) for b in bounds) < 1e-6:
        log.warning("The fitted temperature %.4g is at the search bound %s: the held-out NLL has no interior minimum",
                    temperature, bounds)
    return temperature


def calibration_metrics(logits: torch.Tensor, labels: torch.Tensor, *, temperature: float = 1.0,
                        n_bins: int = N_BINS, binning: str = "equal_mass") -> dict[str, float]:
    """``{"ece", "nll", "brier"}`` of ``logits / temperature`` (the columns of a result row, per eval set)."""
    scaled = apply_temperature(logits, temperature)
    return {"ece": expected_calibration_error(scaled, labels, n_bins, binning),
            "nll": negative_log_likelihood(scaled, labels), "brier": brier_score(scaled, labels)}


TS_SUFFIX = "_ts"  # columns after temperature scaling
CALIBRATION_METRICS = ("ece", "nll", "brier")


@dataclass(frozen=True)
class Calibration:
    """What the evaluation adds per set: the raw calibration columns and, with ``temperature``, the scaled ones."""

    n_bins: int = N_BINS
    binning: str = "equal_mass"
    temperature: float | None = None  # fitted on the held-out split (None: no scaled columns)

    def columns(self, name: str, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """``{"<name>/ece": ..., "<name>/nll": ..., "<name>/brier": ...}`` (+ the ``_ts`` ones)."""
        out = {f"{name}/{k}": v for k, v in
               calibration_metrics(logits, labels, n_bins=self.n_bins, binning=self.binning).items()}
        if self.temperature is not None:
            scaled = calibration_metrics(logits, labels, temperature=self.temperature, n_bins=self.n_bins,
                                         binning=self.binning)
            out.update({f"{name}/{k}{TS_SUFFIX}": v for k, v in scaled.items()})
        return out
