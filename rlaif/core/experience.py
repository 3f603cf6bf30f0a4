"""PPO experience: padded rollout batches, the learner's per-token outputs, and the advantages built from them.

One PPO iteration (Ziegler et al. 2019, arXiv 1909.08593; Ouyang et al. 2022) turns
sampled responses into training data in three typed steps:

1. `collate_rollouts`: prompts and responses as token ids -> a `RolloutBatch`, padded
   so that prompt + response is one forward pass (prompts left-padded, responses
   right-padded: every response starts at the same column).
2. The learner returns `PolicyOutputs` for it: the policy's and the reference's
   log-probs of the sampled tokens and the critic's values, each (batch, response_len).
3. `make_experience`: scores + outputs -> per-token KL-penalised rewards, advantages
   (GAE, or a critic-free estimator) and returns, optionally whitened -> an `ExperienceBatch`.

Every type here is a NamedTuple of tensors with batch first, so `index_batch` /
`split_batch` slice any of them along the batch for mini-batches and rank shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, TypeVar

import torch

from rlaif.core.advantages import ESTIMATORS, GROUPED, KLKind, gae, group_baseline, returns_to_go, token_rewards
from rlaif.core.tensor_ops import masked_mean, masked_whiten


class RolloutBatch(NamedTuple):
    """Prompts and sampled responses, padded for one forward pass of prompt + response.

    Attributes:
        prompt_ids: (batch, prompt_len) long, left-padded.
        prompt_mask: (batch, prompt_len) long, 1 on real prompt tokens.
        response_ids: (batch, response_len) long, right-padded.
        response_mask: (batch, response_len) long, 1 on real response tokens.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor


class PolicyOutputs(NamedTuple):
    """What the learner computes for a `RolloutBatch`; each (batch, response_len), 0 on padding.

    Attributes:
        logprobs: log-probs of the sampled tokens under the current policy.
        ref_logprobs: the same under the frozen reference (SFT) policy.
        values: the critic's value of the state before each response token.
    """

    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor


class ExperienceBatch(NamedTuple):
    """Everything a PPO update needs for a batch of samples.

    Attributes:
        prompt_ids, prompt_mask, response_ids, response_mask: as in `RolloutBatch`.
        old_logprobs: (batch, response_len) policy log-probs at rollout time.
        ref_logprobs: (batch, response_len) reference log-probs.
        values: (batch, response_len) critic values at rollout time (0 without a critic).
        scores: (batch,) reward-model (or rule) scores of the responses.
        rewards: (batch, response_len) per-token rewards: -β·KL (when the KL is in the reward),
            plus the score on the last token (less its group's baseline under grpo / rloo).
        advantages: (batch, response_len) advantages (GAE or critic-free, whitened if asked), 0 on padding.
        returns: (batch, response_len) value targets, 0 on padding.
        policy_version: (batch,) long, the policy version that sampled each response.
        behaviour_logprobs: (batch, response_len) the rollout engine's sampling log-probs of
            the tokens (the behaviour distribution), for truncated importance sampling and the
            rollout/learner mismatch; equal to `old_logprobs` where those are the engine's.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    policy_version: torch.Tensor
    behaviour_logprobs: torch.Tensor

    def rollout(self) -> RolloutBatch:
        """The token ids and masks alone, for a forward pass."""
        return RolloutBatch(self.prompt_ids, self.prompt_mask, self.response_ids, self.response_mask)


class ExperienceStats(NamedTuple):
    """Batch means for logging: score, per-sequence KL to the reference, response length, advantages."""

    score_mean: float
    score_std: float
    kl_mean: float
    response_length_mean: float
    return_mean: float
    value_mean: float


B = TypeVar("B", RolloutBatch, PolicyOutputs, ExperienceBatch)


def collate_rollouts(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_token_id: int
) -> RolloutBatch:
    """Pad prompts on the left and responses on the right into one `RolloutBatch`.

    Left-padding prompts puts every response's first token in the same column, so
    the logits that predict response token t sit at column ``prompt_len - 1 + t`` in
    every row. Models must then get position ids from the mask (see
    `position_ids_from_mask`), or a padded row would start at the wrong position.

    Raises:
        ValueError: if the lengths differ, the batch is empty, or a prompt or a
            response has no tokens (an empty response has no token to score).
    """
    if len(prompts) != len(responses) or not prompts:
        raise ValueError(f"need as many prompts as responses (>0), got {len(prompts)} and {len(responses)}")
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        if not p or not r:
            raise ValueError(f"sample {i}: empty {'prompt' if not p else 'response'}")
    prompt_len = max(len(p) for p in prompts)
    response_len = max(len(r) for r in responses)
    n = len(prompts)
    prompt_ids = torch.full((n, prompt_len), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, prompt_len), dtype=torch.long)
    response_ids = torch.full((n, response_len), pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((n, response_len), dtype=torch.long)
    for row, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        prompt_ids[row, prompt_len - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        prompt_mask[row, prompt_len - len(p) :] = 1
        response_ids[row, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        response_mask[row, : len(r)] = 1
    return RolloutBatch(prompt_ids, prompt_mask, response_ids, response_mask)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only: 0 at each row's first real token.

    Args:
        attention_mask: (batch, seq_len), 1 on real tokens (left and/or right padding).

    Returns:
        (batch, seq_len) long; padding gets 0 (its attention is masked anyway).
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def index_batch(batch: B, index: torch.Tensor | slice) -> B:
    """The rows `index` of every field (all fields are batch-first)."""
    return type(batch)(*(field[index] for field in batch))


R = TypeVar("R", RolloutBatch, ExperienceBatch)


def trim_padding(batch: R) -> R:
    """`batch` without the columns that are padding in every row, for a cheaper forward pass.

    Drops the leading prompt columns and the trailing response columns that no row uses
    (a batch padded for other rows, as a micro-batch of a larger batch is). Response
    tokens stay in their columns, so per-token fields are sliced alike and the forward
    pass's outputs line up with them; at least one response column is kept.
    """
    used = batch.prompt_mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else batch.prompt_mask.shape[1]
    used = batch.response_mask.any(dim=0).nonzero()
    width = int(used[-1]) + 1 if len(used) else 1
    fields = []
    for name, t in zip(batch._fields, batch, strict=True):
        if name.startswith("prompt_"):
            t = t[:, start:]
        elif t.dim() == 2:
            t = t[:, :width]
        fields.append(t)
    return type(batch)(*fields)


def split_batch(batch: B, parts: int) -> list[B]:
    """`parts` contiguous shards along the batch; sizes differ by at most one, in order."""
    n = batch[0].shape[0]
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    size, extra = divmod(n, parts)
    shards, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        shards.append(index_batch(batch, slice(start, end)))
        start = end
    return shards


def concat_outputs(parts: Sequence[PolicyOutputs]) -> PolicyOutputs:
    """Rank shards of `PolicyOutputs` back into one batch, padding response_len to the widest.

    Shards come back as wide as their own longest response; the padding is 0,
    which every consumer masks.
    """
    width = max(p.logprobs.shape[1] for p in parts)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]))

    return PolicyOutputs(*(torch.cat([pad(p[i]) for p in parts]) for i in range(len(PolicyOutputs._fields))))


def make_experience(
    rollout: RolloutBatch,
    outputs: PolicyOutputs,
    scores: torch.Tensor,
    policy_version: torch.Tensor,
    kl_coef: float,
    kl_estimator: KLKind,
    gamma: float,
    lam: float,
    whiten_advantages: bool,
    behaviour_logprobs: torch.Tensor | None = None,
    estimator: str = "gae",
    group_size: int = 1,
    grpo_std_norm: bool = True,
    kl_in_reward: bool = True,
) -> tuple[ExperienceBatch, torch.Tensor]:
    """Rewards, advantages and returns for one batch of samples (InstructGPT eq. 2 + GAE, or critic-free).

    The score lands on each response's last token and every token pays
    ``kl_coef`` times its KL estimate to the reference (`token_rewards`); then, by
    `estimator` (`rlaif.core.advantages`):

    - ``gae``: GAE runs backwards over the response tokens with the critic's values;
    - ``reinforce_pp``: the returns-to-go of those rewards (REINFORCE++);
    - ``grpo`` / ``rloo``: the scores first lose their prompt group's baseline
      (`group_baseline`; the responses to one prompt are `group_size` consecutive rows),
      then the same returns-to-go: with the KL in the loss (``kl_in_reward`` false) and
      γ = 1, every token of a response gets its baselined score.

    Whitening (gae and reinforce_pp only: the group baselines centre the others already)
    normalises the advantages over the whole batch's real tokens, so it, and the groups,
    must see the global batch, not a rank's shard. Critic-free, ``returns`` are the
    advantages (no value model regresses on them) and ``values`` are whatever `outputs`
    holds (zeros from a learner without a critic).

    Args:
        rollout: the padded samples.
        outputs: the learner's log-probs, reference log-probs and values,
            (batch, response_len) each (wider is cut to the rollout's width).
        scores: (batch,) one score per response.
        policy_version: (batch,) long, the version that sampled each response.
        kl_coef: β.
        kl_estimator: "k1", "k2" or "k3" (see `rlaif.core.advantages.kl_penalty`).
        gamma: discount.
        lam: GAE λ.
        whiten_advantages: normalise advantages to mean 0, variance 1 over real tokens
            (gae and reinforce_pp).
        behaviour_logprobs: (batch, response_len) the engine's sampling log-probs (wider
            is cut); None: the policy's log-probs in `outputs` are themselves the engine's.
        estimator: "gae", "grpo", "rloo" or "reinforce_pp".
        group_size: responses per prompt (grpo and rloo).
        grpo_std_norm: grpo only: divide by the group's std.
        kl_in_reward: put ``-kl_coef·KL`` in the per-token rewards; false when the KL is
            a loss term instead (the per-sequence KL is returned either way, for logs).

    Returns:
        The `ExperienceBatch` and the (batch,) per-sequence KL (unscaled by β),
        which a KL controller and the logs read.
    """
    width = rollout.response_ids.shape[1]
    logprobs, ref_logprobs, values = (t[:, :width] for t in outputs)
    mask = rollout.response_mask.bool()
    scores = scores.to(logprobs.dtype)
    shaped_scores = scores
    if estimator in GROUPED:
        shaped_scores = group_baseline(scores, group_size, estimator, grpo_std_norm)
    elif estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {ESTIMATORS}")
    reward_kl_coef = kl_coef if kl_in_reward else 0.0
    shaped = token_rewards(shaped_scores, logprobs, ref_logprobs, mask, reward_kl_coef, kl_estimator)
    if estimator == "gae":
        advantages, returns = gae(shaped.rewards, values, mask, gamma, lam)
    else:
        advantages = returns_to_go(shaped.rewards, mask, gamma)
        returns = advantages
    if whiten_advantages and estimator not in GROUPED:
        advantages = masked_whiten(advantages, mask)
    batch = ExperienceBatch(
        *rollout,
        old_logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        values=values,
        scores=scores,
        rewards=shaped.rewards,
        advantages=advantages,
        returns=returns,
        policy_version=policy_version.long(),
        behaviour_logprobs=logprobs if behaviour_logprobs is None else behaviour_logprobs[:, :width],
    )
    return batch, shaped.kl


def experience_stats(batch: ExperienceBatch, kl: torch.Tensor) -> ExperienceStats:
    """Means over the batch (values and returns over real response tokens)."""
    mask = batch.response_mask.bool()
    scores = batch.scores.double()
    return ExperienceStats(
        score_mean=float(scores.mean()),
        score_std=float(scores.std(unbiased=False)),
        kl_mean=float(kl.double().mean()),
        response_length_mean=float(mask.sum(dim=-1).double().mean()),
        return_mean=float(masked_mean(batch.returns, mask)),
        value_mean=float(masked_mean(batch.values, mask)),
    )
