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
    """One response to score: the prompt text, the response text and its token ids."""

    prompt: str
    response: str
    response_token_ids: tuple[int, ...]


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


def build_rule_reward(spec: str) -> RuleReward:
    """The rule reward named by ``"<name>:<argument>"``; a one-line ValueError if unknown."""
    name, _, arg = spec.partition(":")
    if name not in RULE_REWARDS:
        raise ValueError(f"unknown rule reward {name!r} in {spec!r}; known: {sorted(RULE_REWARDS)}")
    return RULE_REWARDS[name](arg)
