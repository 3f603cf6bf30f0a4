"""Unit tests for rlaif.core.losses and rlaif.core.tensor_ops, hand-computed."""

import math

import pytest
import torch

from rlaif.core.losses import (
    LogprobMismatch,
    PPOLossStats,
    bradley_terry_loss,
    entropy_from_logits,
    logprob_mismatch,
    ppo_policy_loss,
    truncated_is_weights,
    value_loss,
)
from rlaif.core.tensor_ops import masked_mean, masked_sum, masked_var, masked_whiten


def _close(actual: torch.Tensor, expected: float) -> None:
    assert actual.item() == pytest.approx(expected, rel=1e-6, abs=1e-7)


# --- tensor_ops -------------------------------------------------------------


def test_masked_mean_and_sum_ignore_padding() -> None:
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, float("inf"), float("nan")]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # Sum of 1, 2, 3 = 6 over 3 entries -> mean 2; padded inf / nan never leak.
    _close(masked_sum(x, mask), 6.0)
    _close(masked_mean(x, mask), 2.0)
    # Per row: (1 + 2) / 2 = 1.5 and 3 / 1 = 3.
    assert torch.allclose(masked_mean(x, mask, dim=1), torch.tensor([1.5, 3.0]))


def test_masked_mean_of_empty_mask_is_zero() -> None:
    _close(masked_mean(torch.tensor([5.0, 7.0]), torch.tensor([False, False])), 0.0)


def test_masked_var_and_whiten() -> None:
    x = torch.tensor([[1.0, 3.0, 50.0]])
    mask = torch.tensor([[True, True, False]])
    # Entries 1 and 3: mean 2, squared deviations 1 + 1; unbiased var = 2 / 1 = 2.
    _close(masked_var(x, mask), 2.0)
    _close(masked_var(x, mask, unbiased=False), 1.0)
    # Whitened: (1 - 2) / sqrt(2), (3 - 2) / sqrt(2); padding -> 0.
    s = 1.0 / math.sqrt(2.0)
    assert torch.allclose(masked_whiten(x, mask), torch.tensor([[-s, s, 0.0]]), atol=1e-6)
    # shift_mean=False keeps the mean 2: 2 -+ 1/sqrt(2).
    kept = masked_whiten(x, mask, shift_mean=False)
    assert torch.allclose(kept, torch.tensor([[2.0 - s, 2.0 + s, 0.0]]), atol=1e-6)


# --- Bradley-Terry ----------------------------------------------------------


def test_bradley_terry_equal_rewards_is_log2() -> None:
    # p = 1, r_a - r_b = 0: -log sigma(0) = -log(1/2) = log 2.
    loss = bradley_terry_loss(torch.tensor([0.5]), torch.tensor([0.5]), 1.0)
    _close(loss, math.log(2.0))
    # With r_a = r_b the prediction is 1/2 whatever p is, so the loss is log 2.
    loss = bradley_terry_loss(torch.zeros(2), torch.zeros(2), torch.tensor([0.3, 0.9]))
    _close(loss, math.log(2.0))


def test_bradley_terry_soft_label_hand_computed() -> None:
    # margin = ln 3 -> sigma(margin) = 3/4, sigma(-margin) = 1/4.
    # p = 0.75: L = -(0.75 ln 0.75 + 0.25 ln 0.25) = entropy of (3/4, 1/4), the minimum.
    margin = math.log(3.0)
    loss = bradley_terry_loss(torch.tensor([margin]), torch.tensor([0.0]), 0.75)
    _close(loss, -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    # Batch mean: pair 1 as above, pair 2 with p = 1 and margin 0 -> log 2.
    loss = bradley_terry_loss(torch.tensor([margin, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.75, 1.0]))
    expected_1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    _close(loss, (expected_1 + math.log(2.0)) / 2)


def test_bradley_terry_is_stable_for_huge_margins() -> None:
    # Hard label against a margin of -1000: -log sigma(-1000) ~= 1000, not inf.
    loss = bradley_terry_loss(torch.tensor([0.0]), torch.tensor([1000.0]), 1.0)
    _close(loss, 1000.0)


# --- PPO policy loss --------------------------------------------------------


def test_ppo_clips_ratio_above_one_plus_eps_for_positive_advantage() -> None:
    # ratio = 1.5, eps = 0.2, A = 2: unclipped -3.0, clipped -1.2*2 = -2.4;
    # max(-3.0, -2.4) = -2.4 -> ratio effectively clipped to 1.2.
    old = torch.tensor([[0.0]])
    new = torch.tensor([[math.log(1.5)]], requires_grad=True)
    loss, stats = ppo_policy_loss(new, old, torch.tensor([[2.0]]), torch.ones(1, 1), 0.2)
    _close(loss, -2.4)
    _close(stats.clip_fraction, 1.0)
    # approx KL = (1.5 - 1) - ln 1.5.
    _close(stats.approx_kl, 0.5 - math.log(1.5))
    # Clipped tokens give no gradient.
    (grad,) = torch.autograd.grad(loss, new)
    assert grad.abs().item() == 0.0


def test_ppo_unclipped_cases() -> None:
    # Token 1: ratio 1.5, A = -1: unclipped 1.5, clipped 1.2 -> max 1.5 (not clipped:
    # a bad action whose ratio grew keeps its full penalty).
    # Token 2: ratio 1, A = 3: both -3.
    # Mean: (1.5 - 3) / 2 = -0.75; clip fraction 0.
    old = torch.zeros(1, 2)
    new = torch.tensor([[math.log(1.5), 0.0]])
    loss, stats = ppo_policy_loss(new, old, torch.tensor([[-1.0, 3.0]]), torch.ones(1, 2), 0.2)
    _close(loss, -0.75)
    _close(stats.clip_fraction, 0.0)
    assert isinstance(stats, PPOLossStats)


def test_ppo_masked_tokens_have_no_effect() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    new = torch.tensor([[0.1, -0.2, 0.3], [0.05, 0.4, -0.6]])
    old = torch.tensor([[0.0, 0.0, 0.1], [0.1, 0.2, 0.3]])
    adv = torch.tensor([[1.0, -1.0, 2.0], [0.5, 3.0, -4.0]])
    loss_a, stats_a = ppo_policy_loss(new, old, adv, mask, 0.2)
    padding = mask == 0
    new_b = new.masked_fill(padding, 9.0)
    old_b = old.masked_fill(padding, -7.0)
    adv_b = adv.masked_fill(padding, 123.0)
    loss_b, stats_b = ppo_policy_loss(new_b, old_b, adv_b, mask, 0.2)
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(stats_a.clip_fraction, stats_b.clip_fraction)
    assert torch.equal(stats_a.approx_kl, stats_b.approx_kl)


# --- truncated importance sampling and the rollout/learner mismatch ----------


def test_truncated_is_weights_cap_the_ratio_of_learner_to_engine() -> None:
    # Token 1: learner π_old 0.5, engine 0.25 -> 2, under the cap 3.
    # Token 2: learner 0.6, engine 0.1 -> 6, capped at 3.
    # Token 3: learner 0.2, engine 0.4 -> 0.5 (weights below 1 are never raised).
    old = torch.log(torch.tensor([[0.5, 0.6, 0.2]]))
    behaviour = torch.log(torch.tensor([[0.25, 0.1, 0.4]]))
    tis = truncated_is_weights(old, behaviour, cap=3.0)
    assert torch.allclose(tis.weights, torch.tensor([[2.0, 3.0, 0.5]]))
    assert tis.clipped.tolist() == [[False, True, False]]


def test_ppo_loss_weights_each_token_by_its_detached_is_weight() -> None:
    # Ratios 1 (new = old) on both tokens, so nothing is clipped: per-token losses -A = [-1, 2].
    # Weights [3 (capped from 6), 0.5]: (-1 * 3 + 2 * 0.5) / 2 = -1.0 (unweighted: 0.5).
    old = torch.zeros(1, 2)
    new = torch.zeros(1, 2, requires_grad=True)
    adv = torch.tensor([[1.0, -2.0]])
    weights = truncated_is_weights(torch.log(torch.tensor([[0.6, 0.2]])), torch.log(torch.tensor([[0.1, 0.4]])), 3.0)
    loss, stats = ppo_policy_loss(new, old, adv, torch.ones(1, 2), 0.2, is_weights=weights.weights)
    _close(loss, -1.0)
    _close(ppo_policy_loss(new, old, adv, torch.ones(1, 2), 0.2)[0], 0.5)
    _close(stats.clip_fraction, 0.0)
    # d loss / d new = -A * ratio * w / 2 = [-1 * 3 / 2, 2 * 0.5 / 2]; no gradient flows into the weights.
    (grad,) = torch.autograd.grad(loss, new)
    assert torch.allclose(grad, torch.tensor([[-1.5, 0.5]]))


def test_logprob_mismatch_sums_abs_gap_and_k3_over_real_tokens() -> None:
    # Token 1: learner - engine = ln 2 -> r = 2: |gap| ln 2, k3 = 2 - 1 - ln 2 = 1 - ln 2.
    # Token 2: gap -ln 2 -> r = 1/2: |gap| ln 2, k3 = 1/2 - 1 + ln 2 = ln 2 - 1/2.
    # Token 3: equal -> 0 and 0. Token 4 is padding (a huge gap that must not count).
    ln2 = math.log(2.0)
    learner = torch.tensor([[ln2 - 1.0, -1.0 - ln2, -0.3, 50.0]])
    engine = torch.tensor([[-1.0, -1.0, -0.3, 0.0]])
    m = logprob_mismatch(learner, engine, torch.tensor([[1, 1, 1, 0]]))
    assert m.tokens == 3
    assert m.abs_diff == pytest.approx(2 * ln2, rel=1e-6)
    assert m.k3 == pytest.approx(0.5, rel=1e-5)  # (1 - ln 2) + (ln 2 - 1/2)
    assert m.means() == pytest.approx((2 * ln2 / 3, 0.5 / 3), rel=1e-5)
    # Identical log-probs: no mismatch; no tokens: means of 0, not a division by zero.
    assert logprob_mismatch(engine, engine, torch.ones(1, 4)).means() == (0.0, 0.0)
    assert LogprobMismatch(0.0, 0.0, 0.0).means() == (0.0, 0.0)


# --- value loss -------------------------------------------------------------


def test_value_loss_hand_computed() -> None:
    # Token 1: V = 2, V_old = 1, R = 0, eps = 0.5 -> clip(V) = 1.5.
    #   unclipped (2)^2 = 4, clipped 1.5^2 = 2.25 -> max 4.
    # Token 2: V = 1.2, V_old = 1, R = 2 -> clip(V) = 1.2 (inside).
    #   both (0.8)^2 = 0.64.
    # Token 3: V = 0, V_old = 1, R = 1 -> clip(V) = 0.5.
    #   unclipped 1, clipped 0.25 -> max 1.
    # 0.5 * mean(4, 0.64, 1) = 0.5 * 5.64 / 3 = 0.94.
    values = torch.tensor([[2.0, 1.2, 0.0, 99.0]])
    old = torch.tensor([[1.0, 1.0, 1.0, -99.0]])
    returns = torch.tensor([[0.0, 2.0, 1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    _close(value_loss(values, old, returns, mask, 0.5), 0.94)


# --- entropy ----------------------------------------------------------------


def test_entropy_from_logits() -> None:
    # Uniform over 4 tokens: ln 4. Two equal tokens and two banned (-inf)
    # ones: uniform over 2 -> ln 2. Third position is padding.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, float("-inf"), float("-inf")], [9.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    _close(entropy_from_logits(logits, mask), (math.log(4.0) + math.log(2.0)) / 2)


def test_token_losses_aggregate_by_token_by_sequence_or_by_a_constant_length() -> None:
    from rlaif.core.losses import aggregate_tokens

    per_token = torch.tensor([[1.0, 3.0, 9.0], [6.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # Token mean: (1 + 3 + 6) / 3; sequence mean: (2 + 6) / 2; Dr. GRPO: (4/4 + 6/4) / 2.
    assert float(aggregate_tokens(per_token, mask, "token_mean")) == pytest.approx(10 / 3)
    assert float(aggregate_tokens(per_token, mask, "seq_mean")) == pytest.approx(4.0)
    assert float(aggregate_tokens(per_token, mask, "seq_sum", max_len=4)) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="max_len >= 1"):
        aggregate_tokens(per_token, mask, "seq_sum")
    with pytest.raises(ValueError, match="unknown loss aggregation 'sum'"):
        aggregate_tokens(per_token, mask, "sum")


def test_ppo_loss_aggregates_as_asked() -> None:
    # Ratio 1 everywhere: each token's loss is -A.
    adv = torch.tensor([[1.0, 3.0], [6.0, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    zeros = torch.zeros(2, 2)
    token, _ = ppo_policy_loss(zeros, zeros, adv, mask, 0.2)
    seq, _ = ppo_policy_loss(zeros, zeros, adv, mask, 0.2, agg="seq_mean")
    assert float(token) == pytest.approx(-10 / 3) and float(seq) == pytest.approx(-4.0)


def test_kl_loss_gradients_match_the_estimators_derivatives() -> None:
    from rlaif.core.losses import kl_loss

    ref = torch.tensor([[-1.0, -2.0]])
    mask = torch.tensor([[1, 1]])
    for kind, derivative in (
        ("k1", lambda d: torch.ones_like(d)),
        ("k2", lambda d: d),
        ("k3", lambda d: 1 - torch.exp(-d)),
    ):
        logprobs = torch.tensor([[-0.5, -2.5]], requires_grad=True)
        loss = kl_loss(logprobs, ref, mask, kind, "token_mean")  # type: ignore[arg-type]
        loss.backward()
        d = (logprobs - ref).detach()
        assert logprobs.grad is not None
        assert torch.allclose(logprobs.grad, derivative(d) / 2), kind
    # k3 at d = 0.5 and -0.5: exp(-d) - 1 + d, mean of the two.
    want = ((math.exp(-0.5) - 0.5) + (math.exp(0.5) - 1.5)) / 2
    assert float(kl_loss(torch.tensor([[-0.5, -2.5]]), ref, mask, "k3")) == pytest.approx(want)
