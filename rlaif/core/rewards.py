"""Rule-based rewards: plain functions that score responses where the reward model would.

RL-CAI's reward is the preference model's score (`rlaif.actors.reward_scorer`). A
rule reward is a registered function over the same samples, for tests and sanity
runs: with a reward that is easy to move, a PPO run whose mean reward does not
rise is broken. Rules are named in config as ``"<name>:<argument>"``:

    fn = build_rule_reward("token_count:198")      # how often token 198 appears
    fn([RewardSample("Hi", "a b", (64, 198))])      # -> [1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple


class RewardSample(NamedTuple):
    """One response to score: the prompt text, the response text and its token ids.

    `finished` is False for a response cut off at the token limit before its end-of-sequence
    token: the reward model must not read it as a complete answer (`rlaif.actors.reward_scorer`).
    """

    prompt: str
    response: str
    response_token_ids: tuple[int, ...]
    finished: bool = True


RuleReward = Callable[[Sequence[RewardSample]], list[float]]
"""Scores a batch of samples, one float per sample, in order."""


def token_count(token_id: int) -> RuleReward:
    """The number of times `token_id` occurs in each response."""

    def score(samples: Sequence[RewardSample]) -> list[float]:
        return [float(s.response_token_ids.count(token_id)) for s in samples]

    return score


def _token_count_from_arg(arg: str) -> RuleReward:
    try:
        return token_count(int(arg))
    except ValueError:
        raise ValueError(f"reward 'token_count:<id>' needs an integer token id, got {arg!r}") from None


# name -> factory taking the text after the colon.
RULE_REWARDS: dict[str, Callable[[str], RuleReward]] = {
    "token_count": _token_count_from_arg,
}


def apply_missing_eos_penalty(scores: Sequence[float], finished: Sequence[bool], penalty: float) -> list[float]:
    """`scores` with `penalty` added to each response that ran out of tokens without an end of sequence.

    A truncated response is not an answer, whatever it scores: without a penalty the policy
    can learn to ramble up to the limit when the reward model likes long openings. A fixed
    penalty for a missing EOS token is the fix of Huang et al. 2024 ("The N+ Implementation
    Details of RLHF with PPO", arXiv 2403.17031; TRL's ``missing_eos_penalty``).

    Args:
        scores: one score per response (reward model or rule).
        finished: one flag per response, False where the response hit the token limit.
        penalty: added to unfinished responses' scores; 0 leaves every score as it is.
    """
    if len(scores) != len(finished):
        raise ValueError(f"need one finished flag per score, got {len(finished)} for {len(scores)}")
    return [s if done else s + penalty for s, done in zip(scores, finished, strict=True)]


def build_rule_reward(spec: str) -> RuleReward:
    """The rule reward named by ``"<name>:<argument>"``; a one-line ValueError if unknown."""
    name, _, arg = spec.partition(":")
    if name not in RULE_REWARDS:
        raise ValueError(f"unknown rule reward {name!r} in {spec!r}; known: {sorted(RULE_REWARDS)}")
    return RULE_REWARDS[name](arg)
