"""Training losses: soft-label Bradley-Terry for the preference model, PPO for the policy.

- ``bradley_terry_loss``: the preference-model loss on AI soft labels
  (Bai et al. 2022, "Constitutional AI", arXiv 2212.08073, §4.1).
- ``ppo_policy_loss``: the clipped surrogate objective (Schulman et al. 2017,
  "Proximal Policy Optimization Algorithms", arXiv 1707.06347, eq. 7).
- ``aggregate_tokens``: per-token losses to one loss (token mean, sequence mean,
  or Dr. GRPO's constant-normalised sequence sum).
- ``kl_loss``: the KL to the reference as a loss term (GRPO, Shao et al. 2024 eq. 3).
- ``value_loss``: the clipped value loss of OpenAI baselines' PPO2, as used
  for language models by Ziegler et al. 2019 (arXiv 1909.08593).
- ``entropy_from_logits``: the policy's mean token entropy, for monitoring
  or an entropy bonus.
- ``truncated_is_weights``: per-token truncated importance weights from the
  rollout engine's (behaviour) distribution to the learner's π_old (Ionides
  2008; Yao et al. 2025).
- ``logprob_mismatch``: how far the engine's sampling log-probs are from the
  learner's for the same tokens at the same weights.

All functions are pure and average over real response tokens only (``mask``).
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from rlaif.core.advantages import KLKind, kl_penalty
from rlaif.core.tensor_ops import masked_mean, masked_sum

# How per-token losses become one (`ppo.loss_agg`).
AGGREGATIONS = ("token_mean", "seq_mean", "seq_sum")


def aggregate_tokens(
    per_token: torch.Tensor, mask: torch.Tensor, agg: str = "token_mean", max_len: int = 0
) -> torch.Tensor:
    """One loss from per-token losses of a (micro-)batch; padding never counts.

    - ``"token_mean"``: the mean over every real token: a long response's tokens
      weigh as much as a short one's, so long responses weigh more in all (DAPO, Yu
      et al. 2025, arXiv 2503.14476, §3.3).
    - ``"seq_mean"``: each response's token mean, then the mean over responses: each
      response weighs the same, so a long one's tokens each weigh less (the GRPO paper,
      Shao et al. 2024, eq. 3).
    - ``"seq_sum"``: each response's token sum divided by the constant ``max_len``,
      then the mean over responses: no weight depends on a length (Dr. GRPO, Liu et al.
      2025, arXiv 2503.20783, §3.1).

    Args:
        per_token: (batch, response_len).
        mask: (batch, response_len) True / 1 on real response tokens.
        agg: one of `AGGREGATIONS`.
        max_len: seq_sum's divisor (the longest possible response), > 0.

    Returns:
        A 0-dim tensor.
    """
    if agg == "token_mean":
        return masked_mean(per_token, mask)
    if agg == "seq_mean":
        return masked_mean(per_token, mask, dim=-1).mean()
    if agg == "seq_sum":
        if max_len < 1:
            raise ValueError(f"loss_agg seq_sum needs max_len >= 1, got {max_len}")
        return (masked_sum(per_token, mask, dim=-1) / max_len).mean()
    raise ValueError(f"unknown loss aggregation {agg!r}; choose one of {AGGREGATIONS}")


def kl_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kind: KLKind = "k3",
    agg: str = "token_mean",
    max_len: int = 0,
) -> torch.Tensor:
    """The policy's KL to the reference on its sampled tokens, as a loss term (GRPO's ``β·D_KL``).

    Per token, the estimator `kind` of `rlaif.core.advantages.kl_penalty` with the
    gradient flowing through `logprobs`, aggregated as the policy loss is. Differentiated
    on samples of the policy (Tang & Munos 2025, "On a few pitfalls in KL divergence
    gradient estimation for RL", arXiv 2506.09477): k2's gradient is, in expectation, the
    reverse KL(π‖π_ref)'s, per token; k3's (GRPO's choice) is the forward KL(π_ref‖π)'s;
    k1's is 0, so as a loss k1 only adds noise. Per-token losses give a partial gradient
    of the sequence-level KL (the paper's second point); the reward placement
    (``ppo.kl_in=reward``) has neither issue.
    """
    return aggregate_tokens(kl_penalty(logprobs, ref_logprobs.detach(), kind), mask, agg, max_len)


class PPOLossStats(NamedTuple):
    """Diagnostics of one PPO policy-loss evaluation (detached 0-dim tensors).

    Tensors, not floats, so that computing them does not force a device sync;
    call ``.item()`` when logging.

    Attributes:
        clip_fraction: share of response tokens where the clipped term was
            the active (larger) one, i.e. where the token's gradient is zero.
        approx_kl: masked mean of ``(ratio - 1) - log ratio``, an unbiased,
            non-negative estimate of KL(old policy || new policy)
            (Schulman 2020, "Approximating KL divergence", k3).
    """

    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    """Soft-label Bradley-Terry loss, mean over the batch.

    ``L = -[p log σ(r_a - r_b) + (1 - p) log σ(r_b - r_a)]``: the
    cross-entropy between the soft label ``p`` and the model's
    P(a ≻ b) = σ(r_a - r_b) (Bai et al. 2022 §4.1). With ``p = 1`` it is the
    usual hard-label loss ``-log σ(r_a - r_b)``. ``logsigmoid`` keeps large
    reward gaps from underflowing to ``log 0``.

    Args:
        r_chosen: (batch,) scalar rewards of response a (response 1).
        r_rejected: (batch,) scalar rewards of response b (response 2).
        p: (batch,) or a float: P(a preferred), the judge's soft label.

    Returns:
        A 0-dim tensor.
    """
    margin = r_chosen - r_rejected
    target = torch.as_tensor(p, dtype=margin.dtype, device=margin.device)
    per_pair = target * F.logsigmoid(margin) + (1.0 - target) * F.logsigmoid(-margin)
    return -per_pair.mean()


class TISWeights(NamedTuple):
    """Truncated importance weights (detached), each (batch, response_len).

    Attributes:
        weights: ``min(exp(old_logprobs - behaviour_logprobs), cap)``.
        clipped: True where the untruncated weight exceeded ``cap``.
    """

    weights: torch.Tensor
    clipped: torch.Tensor


class LogprobMismatch(NamedTuple):
    """Sums over real response tokens of the engine-vs-learner log-prob gap; they add over batches and ranks.

    Attributes:
        abs_diff: sum of ``|learner - engine|``.
        k3: sum of ``r - 1 - log r`` with ``r = exp(learner - engine)``: its mean is
            Schulman's k3 estimate of KL(engine || learner) from tokens the engine sampled.
        tokens: how many tokens were summed.
    """

    abs_diff: float
    k3: float
    tokens: float

    def means(self) -> tuple[float, float]:
        """Mean absolute difference and mean KL per token (0 and 0 over no tokens)."""
        n = max(self.tokens, 1.0)
        return self.abs_diff / n, self.k3 / n


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    is_weights: torch.Tensor | None = None,
    agg: str = "token_mean",
    max_len: int = 0,
) -> tuple[torch.Tensor, PPOLossStats]:
    """Clipped surrogate policy loss (Schulman et al. 2017, eq. 7), negated to minimise.

    Per token: ``max(-A·ratio, -A·clip(ratio, 1-eps, 1+eps))`` with
    ``ratio = exp(logprobs - old_logprobs)``. Taking the max of the losses
    (the min of the objectives) makes the bound pessimistic: the policy gets
    no credit for moving the ratio past ``1 ± eps`` in the advantage's
    direction.

    With ``is_weights`` each token's loss is multiplied by its (detached)
    weight: truncated importance sampling from the distribution that sampled
    the tokens to the π_old the ratio is taken against (`truncated_is_weights`).

    Args:
        logprobs: (batch, response_len) log-probs of the sampled tokens under
            the policy being trained (carries the gradient).
        old_logprobs: (batch, response_len) the same under the policy that
            sampled them.
        advantages: (batch, response_len) per-token advantages, e.g. from GAE.
        mask: (batch, response_len) True / 1 on real response tokens.
        clip_eps: clip range ε, e.g. 0.2.
        is_weights: (batch, response_len) per-token weights, or None for 1.
        agg, max_len: how token losses make the loss (`aggregate_tokens`).

    Returns:
        The aggregated loss (0-dim) and its ``PPOLossStats`` (token means).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)
    if is_weights is not None:
        per_token = per_token * is_weights.detach()
    loss = aggregate_tokens(per_token, mask, agg, max_len)
    with torch.no_grad():
        stats = PPOLossStats(
            clip_fraction=masked_mean((clipped > unclipped).to(ratio.dtype), mask),
            approx_kl=masked_mean((ratio - 1.0) - log_ratio, mask),
        )
    return loss, stats


def truncated_is_weights(old_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, cap: float) -> TISWeights:
    """Per-token truncated importance weights ``min(π_old / μ, cap)``.

    The rollout engine samples from μ, which differs from the learner's π_old at the same
    weights (other kernels, other precision); PPO's ratio is taken against π_old, so the
    tokens are off-policy for it. Weighting each token's loss by π_old / μ corrects for
    that, and truncating the weight at ``cap`` bounds its variance (Ionides 2008,
    "Truncated Importance Sampling"; Yao et al. 2025, "Your Efficient RL Framework Secretly
    Brings You Off-Policy RL Training").

    Args:
        old_logprobs: (batch, response_len) the learner's log-probs of the sampled tokens
            at rollout time (π_old).
        behaviour_logprobs: (batch, response_len) the engine's sampling log-probs of the
            same tokens (μ).
        cap: the truncation C > 0, e.g. 2.

    Returns:
        Detached ``TISWeights``; padding gets whatever its log-probs give (mask it).
    """
    with torch.no_grad():
        raw = torch.exp(old_logprobs - behaviour_logprobs)
        return TISWeights(weights=raw.clamp(max=cap), clipped=raw > cap)


def logprob_mismatch(
    learner_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor
) -> LogprobMismatch:
    """How far the engine's sampling log-probs are from the learner's, summed over real tokens.

    Both are log-probs of the same sampled tokens under the same weights, so in exact
    arithmetic they agree; the gap measures the rollout/learner mismatch that makes
    "on-policy" samples slightly off-policy (Yao et al. 2025). The KL term is the k3
    estimator (Schulman 2020, "Approximating KL divergence") of KL(engine || learner):
    tokens are drawn from the engine, and ``r = exp(learner - engine)`` is the ratio of
    the two probabilities, so ``r - 1 - log r >= 0`` is unbiased for it.

    Args:
        learner_logprobs: (batch, response_len) the learner's log-probs.
        engine_logprobs: (batch, response_len) the engine's sampling log-probs.
        mask: (batch, response_len) True / 1 on real response tokens.
    """
    with torch.no_grad():
        keep = mask.bool()
        diff = (learner_logprobs.float() - engine_logprobs.float())[keep]
        k3 = torch.expm1(diff) - diff
        return LogprobMismatch(float(diff.abs().sum()), float(k3.sum()), float(keep.sum()))


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> torch.Tensor:
    """Clipped value loss: ``0.5 · max((V - R)², (clip(V, V_old ± eps) - R)²)``, masked mean.

    Clipping the new value to within ``clip_eps`` of the value at rollout time
    mirrors the policy clip: one batch cannot drag the critic far from where
    it was (OpenAI baselines PPO2; Ziegler et al. 2019).

    Args:
        values: (batch, response_len) current critic predictions (carries the
            gradient).
        old_values: (batch, response_len) critic predictions at rollout time.
        returns: (batch, response_len) regression targets, e.g. from GAE.
        mask: (batch, response_len) True / 1 on real response tokens.
        clip_eps: how far ``values`` may move from ``old_values``.

    Returns:
        A 0-dim tensor.
    """
    clipped_values = torch.clamp(values, old_values - clip_eps, old_values + clip_eps)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens of the entropy of the next-token distribution.

    ``H = logsumexp(z) - Σ softmax(z)·z``, which needs no ``log`` of a
    possibly-zero probability and so stays finite for peaked distributions
    and for logits of ``-inf`` (banned tokens).

    Args:
        logits: (batch, response_len, vocab) policy logits.
        mask: (batch, response_len) True / 1 on real response tokens.

    Returns:
        A 0-dim tensor, in nats.
    """
    probs = torch.softmax(logits, dim=-1)
    # A banned token (logit -inf, probability 0) would give 0 * -inf = nan;
    # flooring its logit to the dtype's minimum makes its term an exact 0.
    finite_logits = logits.clamp(min=torch.finfo(logits.dtype).min)
    entropy = torch.logsumexp(logits, dim=-1) - (probs * finite_logits).sum(dim=-1)
    return masked_mean(entropy, mask)
