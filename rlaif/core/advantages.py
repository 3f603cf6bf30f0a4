"""PPO rewards and advantages: KL penalty, per-token rewards, GAE, KL controllers.

The RLHF/RLAIF reward for a sampled response is the preference model's
scalar score, minus a penalty for drifting from the reference (SFT) policy,
spread over tokens: ``-β·KL_t`` at every response token plus the score at
the last one (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences", arXiv 1909.08593, §2.2; Ouyang et al. 2022, InstructGPT, eq. 2).
Advantages come from Generalized Advantage Estimation (Schulman et al. 2016,
arXiv 1506.02438, eq. 16) with a value model, or from one of the critic-free
estimators, which replace the value model by a baseline built from the batch:

- GRPO (Shao et al. 2024, "DeepSeekMath", arXiv 2402.03300, §4.1): a response's
  score minus the mean score of its prompt's group, over the group's std
  (optional: Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv
  2503.20783, drop it);
- RLOO (Ahmadian et al. 2024, "Back to Basics", arXiv 2402.14740): the score
  minus the mean of the same prompt's other responses;
- REINFORCE++ (Hu 2025, arXiv 2501.03262): the KL-shaped returns-to-go,
  whitened over the whole batch.

β is fixed or adapted towards a target KL (Ziegler et al. 2019 §2.2).
"""

from collections.abc import Callable
from typing import Literal, NamedTuple, Protocol, get_args

import torch

from rlaif.core.tensor_ops import masked_sum

KLKind = Literal["k1", "k2", "k3"]


def _kl_k1(log_ratio: torch.Tensor) -> torch.Tensor:
    return log_ratio


def _kl_k2(log_ratio: torch.Tensor) -> torch.Tensor:
    return 0.5 * log_ratio**2


def _kl_k3(log_ratio: torch.Tensor) -> torch.Tensor:
    # With r = p_ref / p = exp(-d): (r - 1) - log r. Unbiased for KL(p || p_ref)
    # like k1, but never negative and lower variance (Schulman 2020).
    return torch.expm1(-log_ratio) + log_ratio


# Registered estimators, keyed by the names used in config.
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "k1": _kl_k1,
    "k2": _kl_k2,
    "k3": _kl_k3,
}


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: KLKind = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled-token log-probs.

    With ``d = logprobs - ref_logprobs`` on tokens sampled from the policy
    (Schulman 2020, "Approximating KL divergence"):

    - ``"k1"``: ``d``. Unbiased, high variance, can be negative.
    - ``"k2"``: ``0.5·d²``. Biased, low variance, non-negative.
    - ``"k3"``: ``(exp(-d) - 1) + d``. Unbiased, low variance, non-negative.

    Args:
        logprobs: (batch, response_len) policy log-probs of the sampled tokens.
        ref_logprobs: (batch, response_len) reference-policy log-probs of the
            same tokens.
        kind: which estimator.

    Returns:
        (batch, response_len) per-token KL estimates (padding not masked).
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kind!r}; choose one of {get_args(KLKind)}")
    return KL_ESTIMATORS[kind](logprobs - ref_logprobs)


class TokenRewards(NamedTuple):
    """Per-token PPO rewards and the KL they were penalised with.

    Attributes:
        rewards: (batch, response_len) ``-kl_coef·KL_t`` on response tokens,
            plus the score at each sequence's last response token; 0 on padding.
        kl: (batch,) the KL estimate summed over each sequence's response
            tokens (not multiplied by ``kl_coef``): what a KL controller and
            the logs should see.
    """

    rewards: torch.Tensor
    kl: torch.Tensor


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last set entry of each row of ``mask``.

    Args:
        mask: (batch, response_len) True / 1 on real response tokens.

    Returns:
        (batch,) long indices.

    Raises:
        ValueError: if a row has no set entry (an empty response has no
            token to carry its score).
    """
    bool_mask = mask.bool()
    if not bool(bool_mask.any(dim=-1).all()):
        raise ValueError("every sequence needs at least one response token in mask")
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(bool_mask)
    return torch.where(bool_mask, positions, -1).max(dim=-1).values


def token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kind: KLKind = "k1",
) -> TokenRewards:
    """Per-token rewards: KL penalty on every token, the score on the last one.

    Ziegler et al. 2019 §2.2 / InstructGPT eq. 2: ``R = r(x, y) - β·KL``. The
    KL term is dense (one per token) while the preference model scores the
    whole response once, so the score lands on the final response token,
    where the value function sees the complete answer.

    Args:
        scores: (batch,) preference-model scores of the responses.
        logprobs: (batch, response_len) policy log-probs of the sampled tokens.
        ref_logprobs: (batch, response_len) reference log-probs of the same.
        mask: (batch, response_len) True / 1 on real response tokens.
        kl_coef: β, the KL penalty coefficient.
        kind: KL estimator, see ``kl_penalty``.

    Returns:
        ``TokenRewards(rewards, kl)``.
    """
    bool_mask = mask.bool()
    kl = kl_penalty(logprobs, ref_logprobs, kind)
    kl = torch.where(bool_mask, kl, torch.zeros_like(kl))
    rewards = -kl_coef * kl
    last = last_token_index(bool_mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return TokenRewards(rewards=rewards, kl=masked_sum(kl, bool_mask, dim=-1))


class GAEResult(NamedTuple):
    """Advantages and value targets; both (batch, response_len), 0 on padding."""

    advantages: torch.Tensor
    returns: torch.Tensor


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> GAEResult:
    """Generalized Advantage Estimation (Schulman et al. 2016, eq. 16).

    Backwards over tokens: ``δ_t = r_t + γ·V_{t+1} - V_t`` and
    ``A_t = δ_t + γλ·A_{t+1}``; returns (value targets) are ``A_t + V_t``.
    Only unmasked tokens are steps of the episode: a masked token neither
    contributes its reward or value nor breaks the chain, so padding after
    the end never leaks in, and the value after the last real token is 0
    (the episode is over). Advantages are not whitened here; see
    ``tensor_ops.masked_whiten``. Inputs are detached: these are targets.

    Args:
        rewards: (batch, response_len) per-token rewards, e.g. from
            ``token_rewards``.
        values: (batch, response_len) critic values at rollout time.
        mask: (batch, response_len) True / 1 on real response tokens.
        gamma: discount γ.
        lam: GAE λ (bias/variance trade-off: 1 is Monte Carlo, 0 is TD(0)).

    Returns:
        ``GAEResult(advantages, returns)``.
    """
    bool_mask = mask.bool()
    rewards, values = rewards.detach(), values.detach()
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[-1])):
        valid = bool_mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage_t = delta + gamma * lam * next_advantage
        # On padding, carry the later step's state through unchanged.
        next_value = torch.where(valid, values[:, t], next_value)
        next_advantage = torch.where(valid, advantage_t, next_advantage)
        advantages[:, t] = torch.where(valid, advantage_t, torch.zeros_like(advantage_t))
    returns = torch.where(bool_mask, advantages + values, torch.zeros_like(values))
    return GAEResult(advantages=advantages, returns=returns)


# Advantage estimators (`ppo.advantage`); all but gae train no value model.
ESTIMATORS = ("gae", "grpo", "rloo", "reinforce_pp")
# Those whose baseline is the other responses to the same prompt.
GROUPED = ("grpo", "rloo")
# Added to a group's std before dividing by it: a group whose responses all scored the same has
# centred scores of exactly 0, which stay 0 instead of becoming 0 / 0.
GROUP_STD_EPS = 1e-6


def uses_critic(estimator: str) -> bool:
    """Whether `estimator` needs a value model (only gae does)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {ESTIMATORS}")
    return estimator == "gae"


def group_baseline(scores: torch.Tensor, group_size: int, estimator: str, std_norm: bool = True) -> torch.Tensor:
    """Scores with their prompt group's baseline taken off (GRPO or RLOO).

    Responses to one prompt are consecutive: rows ``[g·k, (g+1)·k)`` are group ``g``
    for ``k = group_size``.

    - ``"grpo"``: ``(r_i - mean_g) / (std_g + eps)``, or ``r_i - mean_g`` without
      ``std_norm``. The std is the unbiased one (Bessel), as TRL and veRL compute it.
    - ``"rloo"``: ``r_i - (Σ_{j≠i} r_j) / (k - 1)``, the leave-one-out mean: the baseline
      of each response does not depend on it, so the estimate stays unbiased. It equals
      ``k / (k - 1) · (r_i - mean_g)``.

    A group whose responses all scored the same gets 0 everywhere: nothing in it tells one
    response from another.

    Args:
        scores: (batch,) one score per response, batch a multiple of `group_size`.
        group_size: responses per prompt, >= 2.
        estimator: "grpo" or "rloo".
        std_norm: GRPO only: divide by the group's std.

    Returns:
        (batch,) float tensor.
    """
    if estimator not in GROUPED:
        raise ValueError(f"group_baseline is for {GROUPED}, got {estimator!r}")
    n = scores.shape[0]
    if group_size < 2 or n % group_size:
        raise ValueError(
            f"need groups of >= 2 responses that divide the batch; got {n} responses, groups of {group_size}"
        )
    groups = scores.double().reshape(n // group_size, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    if estimator == "rloo":
        centred = (groups - mean) * group_size / (group_size - 1)
    else:
        centred = groups - mean
        if std_norm:
            centred = centred / (groups.std(dim=1, keepdim=True) + GROUP_STD_EPS)
    return centred.reshape(n).to(scores.dtype if scores.is_floating_point() else torch.float32)


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = Σ_{s≥t} γ^{s-t} r_s`` over each response's real tokens; 0 on padding.

    The advantage of the critic-free estimators: GAE with no values and λ = 1.
    """
    return gae(rewards, torch.zeros_like(rewards), mask, gamma, 1.0).advantages


class KLController(Protocol):
    """Supplies the KL coefficient β and adapts it after each PPO step."""

    @property
    def value(self) -> float: ...

    def update(self, current_kl: float, n_steps: int) -> None: ...


class FixedKLController:
    """A constant KL coefficient; ``update`` does nothing."""

    def __init__(self, kl_coef: float) -> None:
        self._value = kl_coef

    @property
    def value(self) -> float:
        """The KL coefficient β."""
        return self._value

    def update(self, current_kl: float, n_steps: int) -> None:
        """Ignore the measurement: β stays fixed."""


class AdaptiveKLController:
    """Adapts β so the policy's KL from the reference tracks a target.

    Ziegler et al. 2019 §2.2: ``e = clip(KL / target - 1, -0.2, 0.2)`` and
    ``β ← β·(1 + e·n_steps / horizon)``. The clip bounds how fast β can move
    after one noisy KL measurement; ``horizon`` (in samples) sets the time
    scale over which β adapts.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if init_kl_coef < 0 or target <= 0 or horizon <= 0:
            raise ValueError("need init_kl_coef >= 0, target > 0 and horizon > 0")
        self._value = init_kl_coef
        self.target = target
        self.horizon = horizon

    @property
    def value(self) -> float:
        """The current KL coefficient β."""
        return self._value

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move β towards keeping ``current_kl`` at the target.

        Args:
            current_kl: mean per-sequence KL measured on the last batch (the
                mean of ``TokenRewards.kl``).
            n_steps: samples seen since the last update (the batch size).
        """
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self._value *= 1.0 + error * n_steps / self.horizon
