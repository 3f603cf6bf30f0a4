"""PPO experience: padding layout, advantages on hand-computed values, batching, prompt schedule, rule rewards."""

import pytest
import torch

from rlaif.core.experience import (
    PolicyOutputs,
    collate_rollouts,
    concat_outputs,
    index_batch,
    make_experience,
    position_ids_from_mask,
    split_batch,
    trim_padding,
)
from rlaif.core.rewards import RewardSample, apply_missing_eos_penalty, build_rule_reward
from rlaif.engines.base import Completion


def test_collate_left_pads_prompts_and_right_pads_responses() -> None:
    batch = collate_rollouts([[5, 6, 7], [8]], [[1], [2, 3]], pad_token_id=0)
    assert batch.prompt_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch.prompt_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.response_ids.tolist() == [[1, 0], [2, 3]]
    assert batch.response_mask.tolist() == [[1, 0], [1, 1]]


def test_collate_rejects_empty_responses_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="sample 1: empty response"):
        collate_rollouts([[1], [2]], [[3], []], 0)
    with pytest.raises(ValueError, match="as many prompts as responses"):
        collate_rollouts([[1]], [[3], [4]], 0)


def test_positions_count_real_tokens_only() -> None:
    # Row 2 is left-padded by two: its first real token is position 0, as in an unpadded forward pass.
    mask = torch.tensor([[1, 1, 1, 1, 0], [0, 0, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2, 3, 3], [0, 0, 0, 1, 2]]


def test_make_experience_on_hand_computed_values() -> None:
    batch = collate_rollouts([[9], [9]], [[1, 2], [3]], 0)
    outputs = PolicyOutputs(
        logprobs=torch.tensor([[-1.0, -2.0], [-0.5, 0.0]]),
        ref_logprobs=torch.tensor([[-1.5, -2.0], [-0.5, 0.0]]),
        values=torch.tensor([[0.5, 0.25], [0.2, 0.0]]),
    )
    exp, kl = make_experience(
        batch, outputs, torch.tensor([1.0, 2.0]), torch.tensor([3, 3]), 0.1, "k1", 1.0, 1.0, whiten_advantages=False
    )
    # Row 0: KL per token (k1) = [0.5, 0]; rewards = [-0.1*0.5, 0 + score 1] = [-0.05, 1.0].
    # GAE with γ = λ = 1: A_1 = 1.0 - 0.25 = 0.75; A_0 = -0.05 + 0.25 - 0.5 + 0.75 = 0.45; returns = A + V.
    assert exp.rewards[0].tolist() == pytest.approx([-0.05, 1.0])
    assert exp.advantages[0].tolist() == pytest.approx([0.45, 0.75])
    assert exp.returns[0].tolist() == pytest.approx([0.95, 1.0])
    # Row 1 has one real token: its score lands there, padding stays 0 everywhere.
    assert exp.rewards[1].tolist() == pytest.approx([2.0, 0.0])
    assert exp.advantages[1].tolist() == pytest.approx([1.8, 0.0])
    assert kl.tolist() == pytest.approx([0.5, 0.0])
    assert exp.policy_version.tolist() == [3, 3] and exp.scores.tolist() == [1.0, 2.0]
    # No engine log-probs given: the policy's own are the behaviour log-probs (TIS weight 1).
    assert torch.equal(exp.behaviour_logprobs, exp.old_logprobs)


def test_engine_logprobs_travel_beside_the_learners_and_are_sliced_with_them() -> None:
    batch = collate_rollouts([[9], [9]], [[1, 2], [3]], 0)
    outputs = PolicyOutputs(torch.full((2, 2), -1.0), torch.full((2, 2), -1.0), torch.zeros(2, 2))
    engine = torch.tensor([[-1.1, -0.9, 7.0], [-1.2, 0.0, 7.0]])  # wider than the rollout: cut
    exp, _ = make_experience(batch, outputs, torch.ones(2), torch.zeros(2), 0.1, "k1", 1.0, 1.0, False, engine)
    assert torch.equal(exp.behaviour_logprobs, engine[:, :2])
    assert exp.old_logprobs.tolist() == [[-1.0, -1.0], [-1.0, -1.0]]
    row = trim_padding(index_batch(exp, torch.tensor([1])))
    assert torch.equal(row.behaviour_logprobs, torch.tensor([[-1.2]]))


def test_whitened_advantages_have_zero_mean_and_unit_variance_on_real_tokens() -> None:
    batch = collate_rollouts([[9]] * 3, [[1, 2, 3], [4], [5, 6]], 0)
    torch.manual_seed(0)
    outputs = PolicyOutputs(torch.randn(3, 3), torch.randn(3, 3), torch.randn(3, 3))
    exp, _ = make_experience(batch, outputs, torch.randn(3), torch.zeros(3), 0.05, "k3", 1.0, 0.95, True)
    real = exp.advantages[batch.response_mask.bool()]
    assert float(real.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(real.var()) == pytest.approx(1.0, abs=1e-5)
    assert not exp.advantages[~batch.response_mask.bool()].any()


def test_split_index_and_concat_round_trip() -> None:
    batch = collate_rollouts([[1]] * 5, [[1], [2, 2], [3], [4, 4, 4], [5]], 0)
    shards = split_batch(batch, 2)
    assert [s.prompt_ids.shape[0] for s in shards] == [3, 2]
    assert index_batch(batch, torch.tensor([3])).response_ids.tolist() == [[4, 4, 4]]
    # Shards come back from ranks with their own widths; concatenation pads them with zeros.
    parts = [PolicyOutputs(*(torch.ones(3, 2) for _ in range(3))), PolicyOutputs(*(torch.ones(2, 3) for _ in range(3)))]
    merged = concat_outputs(parts)
    assert merged.logprobs.shape == (5, 3) and merged.values[:3, 2].tolist() == [0.0, 0.0, 0.0]


def test_trim_padding_drops_columns_no_row_uses_and_keeps_tokens_in_their_columns() -> None:
    batch = collate_rollouts([[5, 6, 7], [8], [9, 9]], [[1], [2, 3, 4], [5]], 0)
    rows = trim_padding(index_batch(batch, torch.tensor([2, 0])))
    assert rows.prompt_ids.tolist() == [[0, 9, 9], [5, 6, 7]]
    assert rows.response_ids.tolist() == [[5], [1]] and rows.response_mask.tolist() == [[1], [1]]
    rows = trim_padding(index_batch(batch, torch.tensor([1, 2])))
    assert rows.prompt_ids.tolist() == [[0, 8], [9, 9]] and rows.prompt_mask.tolist() == [[0, 1], [1, 1]]
    assert rows.response_ids.tolist() == [[2, 3, 4], [5, 0, 0]]
    # Every per-token field of an experience batch is cut alike; per-row fields are left alone.
    outputs = PolicyOutputs(*(torch.arange(9.0).view(3, 3) + k for k in range(3)))
    exp, _ = make_experience(batch, outputs, torch.ones(3), torch.tensor([0, 1, 2]), 0.1, "k1", 1.0, 0.95, False)
    cut = trim_padding(index_batch(exp, torch.tensor([0, 2])))
    assert cut.prompt_ids.shape == (2, 3) and cut.policy_version.tolist() == [0, 2]
    assert cut.values.tolist() == [[2.0], [8.0]] and cut.advantages.shape == cut.returns.shape == (2, 1)
    assert cut.scores.tolist() == [1.0, 1.0]


def test_missing_eos_penalty_lands_on_unfinished_responses_only() -> None:
    # Scores 1, 2, 0.5; the second ran out of tokens: 2 + (-1) = 1. Penalty 0: unchanged.
    assert apply_missing_eos_penalty([1.0, 2.0, 0.5], [True, False, True], -1.0) == [1.0, 1.0, 0.5]
    assert apply_missing_eos_penalty([1.0, 2.0], [False, False], 0.0) == [1.0, 2.0]
    with pytest.raises(ValueError, match="one finished flag per score"):
        apply_missing_eos_penalty([1.0], [True, False], -1.0)


def test_a_completion_is_finished_only_when_the_model_ended_it() -> None:
    assert Completion("Hi.", (5, 2), (), "stop").finished
    assert not Completion("Once upon", (5, 6), (), "length").finished
    # Callers that know nothing of truncation get finished samples.
    assert RewardSample("q", "a", (1,)).finished


def test_token_count_rule_reward() -> None:
    fn = build_rule_reward("token_count:7")
    samples = [RewardSample("q", "a", (7, 1, 7)), RewardSample("q", "b", (1,))]
    assert fn(samples) == [2.0, 0.0]
    with pytest.raises(ValueError, match="unknown rule reward 'bogus'"):
        build_rule_reward("bogus:1")
    with pytest.raises(ValueError, match="integer token id"):
        build_rule_reward("token_count:x")


def _grouped_batch() -> tuple:
    # Two prompts x two responses; response lengths 2, 1, 2, 2.
    batch = collate_rollouts([[9], [9], [8], [8]], [[1, 2], [3], [4, 5], [6, 7]], 0)
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, 0.0], [-1.0, -1.0], [-1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0], [-0.5, 0.0], [-1.0, -1.0], [-1.0, -1.0]])
    return batch, PolicyOutputs(logprobs, ref, torch.zeros(4, 2))


def test_grpo_with_the_kl_in_the_loss_gives_every_token_its_group_advantage() -> None:
    batch, outputs = _grouped_batch()
    exp, kl = make_experience(
        batch, outputs, torch.tensor([1.0, 3.0, 2.0, 2.0]), torch.zeros(4), 0.1, "k1", 1.0, 0.95,
        whiten_advantages=True, estimator="grpo", group_size=2, grpo_std_norm=False, kl_in_reward=False,
    )  # fmt: skip
    # Group 0: mean 2 -> -1, +1 on every real token; group 1: identical scores -> 0. Not whitened.
    assert torch.equal(exp.advantages, torch.tensor([[-1.0, -1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    assert torch.equal(exp.returns, exp.advantages)
    # The KL is not in the rewards, but it is still measured (row 0: 0.5 nats, k1).
    assert exp.rewards[0].tolist() == pytest.approx([0.0, -1.0]) and kl.tolist() == pytest.approx([0.5, 0, 0, 0])
    assert exp.scores.tolist() == [1.0, 3.0, 2.0, 2.0]


def test_rloo_with_the_kl_in_the_reward_sums_the_penalties_after_each_token() -> None:
    batch, outputs = _grouped_batch()
    exp, _ = make_experience(
        batch, outputs, torch.tensor([1.0, 3.0, 2.0, 2.0]), torch.zeros(4), 0.1, "k1", 1.0, 0.95,
        whiten_advantages=False, estimator="rloo", group_size=2,
    )  # fmt: skip
    # Row 0: baselined score 1 - 3 = -2 on its last token, -0.1 x 0.5 on its first: returns-to-go -2.05, -2.
    assert exp.advantages[0].tolist() == pytest.approx([-2.05, -2.0])
    assert exp.advantages[1].tolist() == pytest.approx([2.0, 0.0])


def test_reinforce_pp_whitens_the_returns_to_go_over_the_batch() -> None:
    batch, outputs = _grouped_batch()
    exp, _ = make_experience(
        batch, outputs, torch.tensor([1.0, 3.0, 2.0, 2.0]), torch.zeros(4), 0.0, "k1", 1.0, 0.95,
        whiten_advantages=True, estimator="reinforce_pp",
    )  # fmt: skip
    mask = batch.response_mask.bool()
    # Unwhitened: each token's return-to-go is its response's score (no KL): 1,1 | 3 | 2,2 | 2,2.
    raw = torch.tensor([1.0, 1.0, 3.0, 2.0, 2.0, 2.0, 2.0])
    want = (raw - raw.mean()) / raw.var().add(1e-8).sqrt()
    assert exp.advantages[mask].tolist() == pytest.approx(want.tolist(), abs=1e-5)
    assert exp.advantages[~mask].tolist() == [0.0]


def test_an_unknown_estimator_is_refused() -> None:
    batch, outputs = _grouped_batch()
    with pytest.raises(ValueError, match="unknown advantage estimator 'vtrace'"):
        make_experience(batch, outputs, torch.zeros(4), torch.zeros(4), 0.0, "k1", 1.0, 1.0, False, estimator="vtrace")
