"""Unit tests for rlaif.core.metrics, hand-computed."""

import math

import pytest
import torch

from rlaif.core.metrics import (
    Summary,
    accuracy,
    expected_calibration_error,
    summarise,
)


def test_ece_of_perfectly_calibrated_bins_is_zero() -> None:
    # Four items at 0.25 with one positive (rate 0.25) and four at 0.75 with
    # three positives (rate 0.75): every bin's rate equals its confidence.
    probs = [0.25] * 4 + [0.75] * 4
    labels = [1, 0, 0, 0, 1, 1, 1, 0]
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)


def test_ece_hand_computed() -> None:
    # Bin [0.9, 1.0]: probs 0.9, 0.9, labels 1, 0 -> |0.5 - 0.9| = 0.4, weight 2/4.
    # Bin [0.1, 0.2): probs 0.1, 0.1, labels 0, 0 -> |0 - 0.1| = 0.1, weight 2/4.
    # ECE = 0.5*0.4 + 0.5*0.1 = 0.25.
    probs = torch.tensor([0.9, 0.9, 0.1, 0.1])
    labels = torch.tensor([1, 0, 0, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.25)


def test_ece_puts_probability_one_in_last_bin() -> None:
    # 1.0 and 0.9 share the last bin [0.9, 1.0]: mean prob 0.95, rate 1/2
    # -> 0.45. (Were 1.0 a bin of its own: 0.5*|0 - 1| + 0.5*|1 - 0.9| = 0.55.)
    assert expected_calibration_error([1.0, 0.9], [0, 1]) == pytest.approx(0.45)


def test_ece_single_bin_is_mean_gap() -> None:
    # One bin: |mean(labels) - mean(probs)| = |1 - 0.5| = 0.5.
    assert expected_calibration_error([0.9, 0.1], [1, 1], n_bins=1) == pytest.approx(0.5)


def test_ece_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        expected_calibration_error([0.5], [1], n_bins=0)
    with pytest.raises(ValueError):
        expected_calibration_error([1.5], [1])
    with pytest.raises(ValueError):
        expected_calibration_error([0.5, 0.5], [1])
    with pytest.raises(ValueError):
        expected_calibration_error([], [])


def test_accuracy_threshold_is_strict() -> None:
    # Predictions: 0.9 -> 1, 0.2 -> 0, 0.5 -> 0 (tie), 0.7 -> 1.
    # Labels 1, 0, 1, 0: right, right, wrong, wrong -> 0.5.
    assert accuracy([0.9, 0.2, 0.5, 0.7], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert accuracy(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.0])) == 1.0


def test_summarise() -> None:
    # [1, 2, 3, 4]: mean 2.5; population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
    expected = Summary(mean=2.5, std=math.sqrt(1.25), min=1.0, max=4.0)
    assert summarise([1.0, 2.0, 3.0, 4.0]) == pytest.approx(expected)
    assert summarise(torch.tensor([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(expected)
    assert summarise([7.0]).std == 0.0
    with pytest.raises(ValueError):
        summarise([])
