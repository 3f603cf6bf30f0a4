"""Unit tests for rlaif.core.soft_labels: hand-computed AI preference labels."""

import math

import pytest

from rlaif.core.soft_labels import (
    PreferenceLabel,
    clamp_probability,
    combine_label,
    ensemble_average,
    hard_label,
    is_position_flip,
    normalise_option_logprobs,
    position_bias,
    swap_average,
)


def test_normalise_recovers_probabilities_from_logprobs() -> None:
    # log(0.7), log(0.3) already sum to 1 in probability space -> (0.7, 0.3).
    probs = normalise_option_logprobs([math.log(0.7), math.log(0.3)])
    assert probs == pytest.approx((0.7, 0.3))


def test_normalise_renormalises_partial_mass() -> None:
    # The option tokens hold 0.2 + 0.2 = 0.4 of the mass -> 0.5 each.
    assert normalise_option_logprobs([math.log(0.2), math.log(0.2)]) == pytest.approx((0.5, 0.5))
    # 0.3 vs 0.1 -> 0.75 / 0.25.
    assert normalise_option_logprobs([math.log(0.3), math.log(0.1)]) == pytest.approx((0.75, 0.25))


def test_normalise_is_stable_for_large_and_minus_inf_logprobs() -> None:
    # exp(1000) overflows; subtracting the max gives softmax(0, -ln 3) = (3/4, 1/4).
    probs = normalise_option_logprobs([1000.0, 1000.0 - math.log(3.0)])
    assert probs == pytest.approx((0.75, 0.25))
    # An option the engine did not return gets probability 0.
    assert normalise_option_logprobs([-2.0, -math.inf]) == (1.0, 0.0)


@pytest.mark.parametrize("bad", [[], [-math.inf, -math.inf], [math.nan, 0.0], [math.inf, 0.0]])
def test_normalise_rejects_unusable_logprobs(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        normalise_option_logprobs(bad)


def test_swap_average_debiases_order() -> None:
    # Order 1: P(A = response 1) = 0.8. Order 2: P(A = response 2) = 0.6, so
    # P(response 1) = 0.4 there. Mean of 0.8 and 0.4 = 0.6.
    assert swap_average(0.8, 0.6) == pytest.approx(0.6)
    # A judge that always says A with 0.7 has no opinion once debiased.
    assert swap_average(0.7, 0.7) == pytest.approx(0.5)


def test_position_bias() -> None:
    # Order-blind judge: p2 = 1 - p1 -> (0.8 + 0.2) / 2 - 0.5 = 0.
    assert position_bias(0.8, 0.2) == pytest.approx(0.0)
    # Always A with 0.7 -> 0.7 - 0.5 = +0.2; always B (P(A) = 0) -> -0.5.
    assert position_bias(0.7, 0.7) == pytest.approx(0.2)
    assert position_bias(0.0, 0.0) == pytest.approx(-0.5)
    # It equals the gap between the order-1 label and the debiased label:
    # 0.8 - swap_average(0.8, 0.6) = 0.8 - 0.6 = 0.2 = (0.8 + 0.6) / 2 - 0.5.
    assert position_bias(0.8, 0.6) == pytest.approx(0.8 - swap_average(0.8, 0.6))


def test_is_position_flip() -> None:
    assert is_position_flip(0.8, 0.6)  # slot A both times
    assert is_position_flip(0.3, 0.1)  # slot B both times
    assert not is_position_flip(0.8, 0.3)  # response 1 both times
    assert not is_position_flip(0.2, 0.9)  # response 2 both times
    assert not is_position_flip(0.5, 0.9)  # 0.5 is no hard choice


def test_clamp_probability() -> None:
    assert clamp_probability(0.95) == 0.6
    assert clamp_probability(0.02) == 0.4
    assert clamp_probability(0.55) == 0.55
    assert clamp_probability(0.9, low=0.3, high=0.7) == 0.7
    with pytest.raises(ValueError):
        clamp_probability(0.5, low=0.7, high=0.3)
    with pytest.raises(ValueError):
        clamp_probability(1.5)


def test_ensemble_average() -> None:
    # (0.9 + 0.6 + 0.3) / 3 = 0.6
    assert ensemble_average([0.9, 0.6, 0.3]) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        ensemble_average([])
    with pytest.raises(ValueError):
        ensemble_average([0.5, -0.1])


def test_hard_label_ties_go_to_zero() -> None:
    assert hard_label(0.51) == 1
    assert hard_label(0.49) == 0
    assert hard_label(0.5) == 0


def test_combine_label_single_order_no_cot() -> None:
    # No swap: P(response 1) is P(A) in order 1; mean of 0.9 and 0.7 = 0.8.
    label = combine_label("pair-1", ["p1", "p2"], [0.9, 0.7])
    assert label.p_first == pytest.approx(0.8)
    assert label.p_a_order2 is None
    assert label.principle_ids == ("p1", "p2")
    assert label.p_a_order1 == (0.9, 0.7)
    assert not label.cot


def test_combine_label_swap_and_ensemble() -> None:
    # Principle 1: (0.8 + (1 - 0.6)) / 2 = 0.6. Principle 2: (0.9 + (1 - 0.3)) / 2 = 0.8.
    # Ensemble: (0.6 + 0.8) / 2 = 0.7.
    label = combine_label("pair-2", ["p1", "p2"], [0.8, 0.9], [0.6, 0.3])
    assert label.p_first == pytest.approx(0.7)
    assert label.p_a_order2 == (0.6, 0.3)


def test_combine_label_cot_clamps_each_principle_after_swap() -> None:
    # Principle 1: (0.99 + (1 - 0.01)) / 2 = 0.99 -> clamped to 0.6.
    # Principle 2: (0.02 + (1 - 0.98)) / 2 = 0.02 -> clamped to 0.4.
    # Mean: (0.6 + 0.4) / 2 = 0.5. (Averaging first would give 0.505 -> 0.505.)
    label = combine_label("pair-3", ["a", "b"], [0.99, 0.02], [0.01, 0.98], cot=True)
    assert label.p_first == pytest.approx(0.5)
    assert label.cot
    # Custom bounds: 0.99 -> 0.7.
    custom = combine_label("pair-4", ["a"], [0.99], cot=True, cot_low=0.3, cot_high=0.7)
    assert custom.p_first == pytest.approx(0.7)


def test_combine_label_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        combine_label("x", ["a", "b"], [0.5])
    with pytest.raises(ValueError):
        combine_label("x", ["a"], [0.5], [0.5, 0.5])
    with pytest.raises(ValueError):
        combine_label("x", [], [])


def test_preference_label_is_frozen_and_validated() -> None:
    label = PreferenceLabel("id", ("a",), 0.6, (0.6,), None, False)
    with pytest.raises(AttributeError):
        label.p_first = 0.1  # type: ignore[misc]
    with pytest.raises(ValueError):
        PreferenceLabel("id", ("a",), 1.2, (0.6,), None, False)
    with pytest.raises(ValueError):
        PreferenceLabel("id", ("a", "b"), 0.6, (0.6,), None, False)
