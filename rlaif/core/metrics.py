"""Evaluation metrics for preference labels and preference models.

- ``accuracy``: agreement of predicted P(label = 1) with 0/1 labels.
- ``expected_calibration_error``: the binned ECE of Naeini et al. 2015 and
  Guo et al. 2017 ("On Calibration of Modern Neural Networks", §2), to check
  that a judge's soft labels or a preference model's P(a ≻ b) mean what they
  say: soft labels are only useful targets if they are calibrated.
- ``summarise``: mean / std / min / max of a list of numbers, for logging.

Inputs are torch tensors or sequences of floats; outputs are Python floats.
"""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch

Values = torch.Tensor | Sequence[float]


def _as_array(values: Values, name: str) -> npt.NDArray[np.float64]:
    if isinstance(values, torch.Tensor):
        array = values.detach().to("cpu", torch.float64).numpy().reshape(-1)
    else:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    return array


def _probs_and_labels(probs: Values, labels: Values) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    p, y = _as_array(probs, "probs"), _as_array(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"probs and labels differ in length: {p.size} vs {y.size}")
    if np.any((p < 0.0) | (p > 1.0)) or np.any(np.isnan(p)):
        raise ValueError("probs must lie in [0, 1]")
    return p, y


def accuracy(probs: Values, labels: Values) -> float:
    """Fraction of items where ``prob > 0.5`` agrees with ``label > 0.5``.

    The strict threshold matches ``soft_labels.hard_label``: a prediction of
    exactly 0.5 counts as predicting 0. Thresholding the labels too lets
    soft labels be scored against their own hard choice.

    Args:
        probs: (n,) predicted P(label = 1).
        labels: (n,) 0/1 labels (or soft labels in [0, 1]).
    """
    p, y = _probs_and_labels(probs, labels)
    return float(np.mean((p > 0.5) == (y > 0.5)))


def expected_calibration_error(probs: Values, labels: Values, n_bins: int = 10) -> float:
    """Binned expected calibration error over P(label = 1).

    ``ECE = Σ_b (n_b / n)·|mean(labels in b) - mean(probs in b)|`` over
    ``n_bins`` equal-width bins of [0, 1] (the last bin includes 1.0). A
    perfectly calibrated predictor scores 0: among items given probability
    0.7, 70 % have label 1. Binning P(label = 1) rather than the max-class
    confidence keeps both sides of 0.5 apart, which is what matters for a
    judge's soft labels.

    Args:
        probs: (n,) predicted P(label = 1).
        labels: (n,) 0/1 labels.
        n_bins: number of equal-width bins.

    Returns:
        ECE in [0, 1].
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _probs_and_labels(probs, labels)
    # floor(p * n_bins) puts p on the bin's left edge in that bin; p = 1.0
    # would open bin n_bins, so it joins the last bin instead.
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        gap = abs(float(y[in_bin].mean()) - float(p[in_bin].mean()))
        ece += gap * float(in_bin.sum()) / p.size
    return ece


class Summary(NamedTuple):
    """Mean, population standard deviation, min and max of some numbers."""

    mean: float
    std: float
    min: float
    max: float


def summarise(values: Values) -> Summary:
    """Mean / std / min / max of ``values``.

    ``std`` is the population standard deviation (divide by n), so a single
    value has std 0 rather than ``nan``.

    Args:
        values: (n,) numbers, n >= 1.
    """
    array = _as_array(values, "values")
    return Summary(
        mean=float(array.mean()),
        std=float(array.std()),
        min=float(array.min()),
        max=float(array.max()),
    )
