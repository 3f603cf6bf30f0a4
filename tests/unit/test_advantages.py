"""Unit tests for rlaif.core.advantages: KL, token rewards, GAE, KL controllers."""

import math

import pytest
import torch

from rlaif.core.advantages import (
    AdaptiveKLController,
    FixedKLController,
    KLController,
    gae,
    kl_penalty,
    last_token_index,
    token_rewards,
)

LN2 = math.log(2.0)


def test_kl_penalty_estimators_hand_computed() -> None:
    # d = logp - logp_ref = 0 - (-ln 2) = ln 2; then -ln 2; then 0.
    logprobs = torch.tensor([[0.0, -LN2, -1.0]])
    ref = torch.tensor([[-LN2, 0.0, -1.0]])
    # k1 = d.
    assert torch.allclose(kl_penalty(logprobs, ref, "k1"), torch.tensor([[LN2, -LN2, 0.0]]))
    # k2 = d^2 / 2.
    k2 = torch.tensor([[0.5 * LN2**2, 0.5 * LN2**2, 0.0]])
    assert torch.allclose(kl_penalty(logprobs, ref, "k2"), k2)
    # k3 = exp(-d) - 1 + d: 1/2 - 1 + ln 2 = ln 2 - 1/2; 2 - 1 - ln 2 = 1 - ln 2; 0.
    k3 = torch.tensor([[LN2 - 0.5, 1.0 - LN2, 0.0]])
    assert torch.allclose(kl_penalty(logprobs, ref, "k3"), k3, atol=1e-6)
    # Default is k1.
    assert torch.equal(kl_penalty(logprobs, ref), kl_penalty(logprobs, ref, "k1"))


def test_kl_penalty_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")  # type: ignore[arg-type]


def test_last_token_index() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 1, 0]
    with pytest.raises(ValueError):
        last_token_index(torch.tensor([[0, 0]]))


def test_token_rewards_hand_computed() -> None:
    # Row 0 (3 tokens): d = [0.5, -1.0, 0.0]; -0.1 * d = [-0.05, 0.1, 0]; score 2 at t=2.
    # Row 1 (2 tokens): d = [0.2, -0.2]; -0.1 * d = [-0.02, 0.02]; score -1 at t=1;
    # the padded t=2 gets 0 whatever its log-probs.
    scores = torch.tensor([2.0, -1.0])
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -0.3, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.4, -0.1, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = token_rewards(scores, logprobs, ref, mask, kl_coef=0.1, kind="k1")
    expected = torch.tensor([[-0.05, 0.1, 2.0], [-0.02, 0.02 - 1.0, 0.0]])
    assert torch.allclose(rewards, expected, atol=1e-6)
    # KL sums, unscaled: 0.5 - 1 + 0 = -0.5 and 0.2 - 0.2 = 0.
    assert torch.allclose(kl, torch.tensor([-0.5, 0.0]), atol=1e-6)


def test_gae_gamma1_lambda1_is_reward_to_go_minus_value() -> None:
    # Rewards [1, 2, 3] -> reward-to-go [6, 5, 3]; values [0.5, 1, 1.5]
    # -> advantages [5.5, 4, 1.5]; returns = advantages + values = reward-to-go.
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert torch.allclose(advantages, torch.tensor([[5.5, 4.0, 1.5]]))
    assert torch.allclose(returns, torch.tensor([[6.0, 5.0, 3.0]]))


def test_gae_gamma_half_lambda_half_hand_computed() -> None:
    # gamma = lam = 0.5, so gamma * lam = 0.25; value after the last token is 0.
    # t=2: delta = 3 + 0.5*0   - 1.5 = 1.5;   A2 = 1.5
    # t=1: delta = 2 + 0.5*1.5 - 1.0 = 1.75;  A1 = 1.75 + 0.25*1.5   = 2.125
    # t=0: delta = 1 + 0.5*1.0 - 0.5 = 1.0;   A0 = 1.0  + 0.25*2.125 = 1.53125
    # returns = A + V = [2.03125, 3.125, 3.0]
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=0.5)
    assert torch.allclose(advantages, torch.tensor([[1.53125, 2.125, 1.5]]))
    assert torch.allclose(returns, torch.tensor([[2.03125, 3.125, 3.0]]))


def test_gae_padding_does_not_leak() -> None:
    # Row 0 is the gamma = lam = 0.5 example padded with two junk tokens; row 1
    # has one real token: A = 4 + 0 - 1 = 3, return 4. Padding -> 0.
    rewards = torch.tensor([[1.0, 2.0, 3.0, 50.0, -70.0], [4.0, 8.0, 8.0, 8.0, 8.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 20.0, 30.0], [1.0, 9.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    assert torch.allclose(advantages, torch.tensor([[1.53125, 2.125, 1.5, 0, 0], [3.0, 0, 0, 0, 0]]))
    assert torch.allclose(returns, torch.tensor([[2.03125, 3.125, 3.0, 0, 0], [4.0, 0, 0, 0, 0]]))
    # Changing padded entries changes nothing.
    padding = mask == 0
    again = gae(rewards.masked_fill(padding, 1e3), values.masked_fill(padding, -1e3), mask, 0.5, 0.5)
    assert torch.equal(again.advantages, advantages)
    assert torch.equal(again.returns, returns)


def test_gae_detaches_inputs() -> None:
    values = torch.tensor([[0.5, 1.0]], requires_grad=True)
    result = gae(torch.ones(1, 2), values, torch.ones(1, 2), 1.0, 1.0)
    assert not result.advantages.requires_grad
    assert not result.returns.requires_grad


def test_adaptive_kl_controller_follows_target() -> None:
    # target 6, horizon 10000, n_steps 256.
    # KL 9: error 9/6 - 1 = 0.5, clipped to 0.2 -> beta *= 1 + 0.2*256/10000 = 1.00512.
    above = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    above.update(current_kl=9.0, n_steps=256)
    assert above.value == pytest.approx(0.1 * 1.00512)
    # KL 3: error -0.5, clipped to -0.2 -> beta *= 0.99488.
    below = AdaptiveKLController(0.1, 6.0, 10000)
    below.update(3.0, 256)
    assert below.value == pytest.approx(0.1 * 0.99488)
    # KL 6.6: error 0.1 (inside the clip) -> beta *= 1.00256.
    near = AdaptiveKLController(0.1, 6.0, 10000)
    near.update(6.6, 256)
    assert near.value == pytest.approx(0.1 * 1.00256)
    # At target: unchanged.
    on = AdaptiveKLController(0.1, 6.0, 10000)
    on.update(6.0, 256)
    assert on.value == pytest.approx(0.1)


def test_fixed_kl_controller_never_moves() -> None:
    fixed: KLController = FixedKLController(0.05)
    fixed.update(100.0, 256)
    assert fixed.value == 0.05


def test_adaptive_kl_controller_validates() -> None:
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=100)
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=1.0, horizon=0)


# --- critic-free estimators -----------------------------------------------------------


def test_grpo_centres_each_group_and_divides_by_its_unbiased_std() -> None:
    from rlaif.core.advantages import group_baseline

    # Two prompts, two responses each: group means 2 and 5; unbiased stds sqrt(2) and 0.
    scores = torch.tensor([1.0, 3.0, 5.0, 5.0])
    got = group_baseline(scores, 2, "grpo", std_norm=True)
    s = math.sqrt(2.0)
    assert got.tolist() == pytest.approx([-1 / (s + 1e-6), 1 / (s + 1e-6), 0.0, 0.0])
    # Dr. GRPO: centred only.
    assert group_baseline(scores, 2, "grpo", std_norm=False).tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0])


def test_rloo_subtracts_the_mean_of_the_other_responses() -> None:
    from rlaif.core.advantages import group_baseline

    # One group of three: 1 - (2+6)/2 = -3; 2 - (1+6)/2 = -1.5; 6 - (1+2)/2 = 4.5.
    got = group_baseline(torch.tensor([1.0, 2.0, 6.0]), 3, "rloo")
    assert got.tolist() == pytest.approx([-3.0, -1.5, 4.5])


@pytest.mark.parametrize(("estimator", "std_norm"), [("grpo", True), ("grpo", False), ("rloo", True)])
def test_a_group_whose_responses_all_scored_the_same_has_zero_advantage(estimator: str, std_norm: bool) -> None:
    from rlaif.core.advantages import group_baseline

    got = group_baseline(torch.tensor([0.7, 0.7, 0.7, 0.7, -2.0, 1.0]), 3, estimator, std_norm)
    assert got[:3].tolist() == [0.0, 0.0, 0.0]
    assert torch.isfinite(got).all() and got[3:].abs().sum() > 0


def test_group_baseline_refuses_groups_that_do_not_tile_the_batch() -> None:
    from rlaif.core.advantages import group_baseline

    with pytest.raises(ValueError, match="groups of 2"):
        group_baseline(torch.zeros(3), 2, "grpo")
    with pytest.raises(ValueError, match="groups of 1"):
        group_baseline(torch.zeros(3), 1, "rloo")
    with pytest.raises(ValueError, match="for \\('grpo', 'rloo'\\)"):
        group_baseline(torch.zeros(4), 2, "reinforce_pp")


def test_returns_to_go_sum_later_rewards_and_skip_padding() -> None:
    from rlaif.core.advantages import returns_to_go

    rewards = torch.tensor([[0.1, 0.2, 1.0], [0.5, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert torch.allclose(returns_to_go(rewards, mask, 1.0), torch.tensor([[1.3, 1.2, 1.0], [0.5, 0.0, 0.0]]))
    # γ = 0.5: 0.1 + 0.5·(0.2 + 0.5·1.0) = 0.45.
    assert returns_to_go(rewards, mask, 0.5)[0].tolist() == pytest.approx([0.45, 0.7, 1.0])


def test_only_gae_uses_a_critic_and_the_names_match_the_config() -> None:
    from rlaif.config import ADVANTAGE_ESTIMATORS, GROUPED_ESTIMATORS
    from rlaif.core.advantages import ESTIMATORS, GROUPED, uses_critic

    assert ESTIMATORS == ADVANTAGE_ESTIMATORS and GROUPED == GROUPED_ESTIMATORS
    assert [uses_critic(e) for e in ESTIMATORS] == [True, False, False, False]
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        uses_critic("ppo")
