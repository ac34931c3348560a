"""Calibration metrics and temperature scaling against values worked out by hand."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from wiseft_lab.evaluation.calibration import (
    Calibration,
    apply_temperature,
    bin_indices,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)

# Six examples over three classes, given as probabilities (logits = log p, so softmax gives p back), in no order:
#   example  probabilities          label  top-1 conf  correct
#   a        [0.05, 0.90, 0.05]     2      0.9         no
#   b        [0.40, 0.35, 0.25]     1      0.4         no
#   c        [0.15, 0.15, 0.70]     2      0.7         yes
#   d        [0.50, 0.30, 0.20]     0      0.5         yes
#   e        [0.10, 0.80, 0.10]     1      0.8         yes
#   f        [0.20, 0.20, 0.60]     2      0.6         yes
PROBS = torch.tensor([[0.05, 0.90, 0.05], [0.40, 0.35, 0.25], [0.15, 0.15, 0.70],
                      [0.50, 0.30, 0.20], [0.10, 0.80, 0.10], [0.20, 0.20, 0.60]], dtype=torch.float64)
LOGITS = PROBS.log()
LABELS = torch.tensor([2, 1, 2, 0, 1, 2])


def test_equal_mass_ece_by_hand():
    # Sorted confidences 0.4 0.5 | 0.6 0.7 | 0.8 0.9: three bins of two.
    #   bin 1: conf (0.4 + 0.5) / 2 = 0.45, accuracy 1/2 -> |0.5 - 0.45| = 0.05
    #   bin 2: conf 0.65, accuracy 1                 -> 0.35
    #   bin 3: conf 0.85, accuracy 1/2               -> 0.35
    # ECE = 2/6 * (0.05 + 0.35 + 0.35) = 0.25
    assert expected_calibration_error(LOGITS, LABELS, n_bins=3) == pytest.approx(0.25)
    bins = reliability_bins(LOGITS, LABELS, n_bins=3)
    assert [b["count"] for b in bins] == [2, 2, 2]
    assert [b["confidence"] for b in bins] == pytest.approx([0.45, 0.65, 0.85])
    assert [b["accuracy"] for b in bins] == pytest.approx([0.5, 1.0, 0.5])
    # norm 2 (the RMS variant, caltrain's default): sqrt((2 * 0.05^2 + 2 * 0.35^2 + 2 * 0.35^2) / 6) = sqrt(0.0825)
    assert expected_calibration_error(LOGITS, LABELS, n_bins=3, norm=2) == pytest.approx(math.sqrt(0.0825))
    # One bin: |mean accuracy 4/6 - mean confidence 3.9/6| = 0.1/6
    assert expected_calibration_error(LOGITS, LABELS, n_bins=1) == pytest.approx(0.1 / 6)


def test_equal_width_ece_by_hand():
    # Bins [0, 1/3), [1/3, 2/3), [2/3, 1]: 0.4 0.5 0.6 -> bin 2 (conf 0.5, accuracy 2/3, gap 1/6);
    # 0.7 0.8 0.9 -> bin 3 (conf 0.8, accuracy 2/3, gap 2/15). ECE = 3/6 * 1/6 + 3/6 * 2/15 = 1/12 + 1/15 = 0.15
    assert expected_calibration_error(LOGITS, LABELS, n_bins=3, binning="equal_width") == pytest.approx(0.15)
    assert [b["count"] for b in reliability_bins(LOGITS, LABELS, n_bins=3, binning="equal_width")] == [3, 3]


def test_bin_assignment():
    # Equal mass, 7 examples in 3 bins: rank r goes to floor(3 r / 7) = 0 0 0 1 1 2 2 (caltrain's BinEqualExamples);
    # the confidences are given out of order, and the tie (0.5, 0.5) keeps the example order.
    confidences = torch.tensor([0.9, 0.5, 0.1, 0.7, 0.5, 0.3, 0.8], dtype=torch.float64)
    # ranks:                      6    2    0    4    3    1    5
    assert bin_indices(confidences, 3).tolist() == [2, 0, 0, 1, 1, 0, 2]
    # Equal width: bin i holds [i/3, (i+1)/3); 1.0 is in the last bin.
    edges = torch.tensor([0.0, 1 / 3 - 1e-12, 1 / 3, 0.5, 2 / 3, 1.0], dtype=torch.float64)
    assert bin_indices(edges, 3, "equal_width").tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="binning must be one of"):
        bin_indices(confidences, 3, "quantile")


def test_nll_and_brier_by_hand():
    # NLL: -mean log p(label) = -(log 0.05 + log 0.35 + log 0.7 + log 0.5 + log 0.8 + log 0.6) / 6
    expected_nll = -sum(math.log(p) for p in (0.05, 0.35, 0.7, 0.5, 0.8, 0.6)) / 6
    assert negative_log_likelihood(LOGITS, LABELS) == pytest.approx(expected_nll)
    # Brier, examples a and d: a: 0.05^2 + 0.9^2 + (0.05 - 1)^2 = 1.715; d: (0.5 - 1)^2 + 0.3^2 + 0.2^2 = 0.38
    assert brier_score(LOGITS[[0, 3]], LABELS[[0, 3]]) == pytest.approx((1.715 + 0.38) / 2)
    # A confident correct prediction costs (almost) nothing, a confident wrong one 2.
    sure = torch.tensor([[30.0, 0.0], [30.0, 0.0]])
    assert brier_score(sure, torch.tensor([0, 1])) == pytest.approx(1.0, abs=1e-12)


def test_temperature_with_a_known_optimum():
    # Four examples with logits (2 ln 3, 0): p(class 0) = sigmoid(2 ln 3 / T). Three are labelled 0, one 1, so the NLL
    # is minimal where p = 3/4, i.e. 2 ln 3 / T = logit(3/4) = ln 3: T = 2.
    logits = torch.tensor([[2 * math.log(3.0), 0.0]] * 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1])
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.0, rel=1e-6)  # the NLL is flat at its minimum: ~sqrt(float64 eps)
    assert torch.softmax(apply_temperature(logits, temperature), dim=1)[0, 0].item() == pytest.approx(0.75)
    assert fit_temperature(logits, labels) == temperature  # deterministic
    scaled = calibration_metrics(logits, labels, temperature=temperature, n_bins=1)
    # After scaling every confidence is 3/4 and the accuracy is 3/4: perfectly calibrated.
    assert scaled["ece"] == pytest.approx(0.0, abs=1e-7)
    assert scaled["nll"] == pytest.approx(-(3 * math.log(0.75) + math.log(0.25)) / 4)
    assert scaled["nll"] < calibration_metrics(logits, labels)["nll"]


def test_temperature_at_the_bound_warns(caplog):
    # Every example right: the NLL keeps falling as T -> 0, so the search ends at the lower bound.
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with caplog.at_level(logging.WARNING):
        temperature = fit_temperature(logits, torch.tensor([0, 1]), bounds=(0.1, 10.0))
    assert temperature == pytest.approx(0.1) and "at the search bound" in caplog.text


def test_input_checks():
    with pytest.raises(ValueError, match=r"logits \(N, K\)"):
        expected_calibration_error(LOGITS, LABELS[:3])
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(LOGITS, 0.0)


def test_calibration_columns_by_hand():
    # one example, two classes, logits (0, 0): p = (1/2, 1/2), argmax 0 = the label: accuracy 1, confidence 1/2
    logits, labels = torch.zeros(1, 2), torch.tensor([0])
    columns = Calibration(n_bins=3, temperature=2.0).columns("photo", logits, labels)
    assert columns == pytest.approx({"photo/ece": 0.5, "photo/nll": math.log(2), "photo/brier": 0.5,
                                     "photo/ece_ts": 0.5, "photo/nll_ts": math.log(2), "photo/brier_ts": 0.5})
    assert set(Calibration().columns("x", logits, labels)) == {"x/ece", "x/nll", "x/brier"}  # no temperature
