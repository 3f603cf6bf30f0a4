"""Sampling for RL-CAI: each iteration's batch, synchronously or up to ``ppo.max_staleness`` batches ahead.

`Rollouts.take(iteration)` returns the batch the learner trains on next. With
``max_staleness`` N = 0 it samples the batch then and there, at the policy the learner holds
(the synchronous loop). With N >= 1 it has also asked the rollout engines for the batches of
the next N iterations before the learner starts training, so sampling runs beside training
(docs/design.md §9). Each rollout actor runs its calls in order, so the weight sync that
follows an update reaches an engine between two of its generation calls: a batch submitted
before the sync of version v is sampled by an older policy, one submitted after it by v.

Two rules keep the samples honest:

- **Staleness bound.** A sample of policy version s that trains the policy at version v has
  staleness v - s. A batch holding any sample with staleness > N is dropped whole, its samples
  counted (``dropped_samples``), and sampled again at the current version; the schedule above
  never produces one, but a resumed or failing run might.
- **Restarts.** A rollout actor that dies mid-batch is restarted by Ray, which re-sends its call;
  the new engine samples with its starting weights. Whenever a restart was seen since a batch was
  submitted, the batch is thrown away and sampled again at the current version
  (``regenerated_samples``), and every batch submitted ahead is thrown away too.

Every kept batch is sampled once and trained once: the queue holds references, not samples,
and a killed driver loses only batches nobody trained (a resumed run samples them anew).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from rlaif.actors.pool import gather
from rlaif.config import PPOConfig
from rlaif.core.prompts import PromptRecord
from rlaif.engines.base import Completion, Generation, Message, SamplingParams
from rlaif.stages.ppo_roles import PPORoles

log = logging.getLogger(__name__)

# How often one iteration samples its batch again after rollout actors restarted, before giving up.
MAX_RESAMPLES = 3


class Sample(NamedTuple):
    """One sampled response: its prompt record, the generation it belongs to, and the completion."""

    record: PromptRecord
    generation: Generation
    completion: Completion


@dataclass(frozen=True)
class Taken:
    """One iteration's batch and how it was come by.

    Attributes:
        samples: the batch, `samples_per_prompt` consecutive samples per prompt, in prompt order.
        staleness: samples per staleness (the learner's version minus the sample's), index = staleness.
        dropped: samples thrown away for exceeding the staleness bound.
        regenerated: samples thrown away because a rollout actor restarted while they were sampled.
        restarts: rollout actors found restarted while this batch was taken.
    """

    samples: list[Sample]
    staleness: list[int]
    dropped: int
    regenerated: int
    restarts: int


def sampling_params(cfg: PPOConfig) -> SamplingParams:
    # No per-request seed: vLLM would give every prompt of the batch the same random stream, and the
    # samples of different prompts would move in lockstep. The engine's own seeded generator is used.
    # The engines always return their sampling log-probs (they cost nothing extra): they are the old
    # log-probs with ppo.old_logprobs=engine, and otherwise the behaviour side of TIS and the mismatch.
    return SamplingParams(
        n=cfg.samples_per_prompt, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, logprobs=True
    )


def _chats(records: list[PromptRecord]) -> list[list[Message]]:
    return [[Message("user", r.prompt)] for r in records]


def _samples(records: list[PromptRecord], generations: list[Generation]) -> list[Sample]:
    return [Sample(r, g, c) for r, g in zip(records, generations, strict=True) for c in g.completions]


def sample_responses(roles: PPORoles, records: list[PromptRecord], cfg: PPOConfig) -> list[Sample]:
    """`samples_per_prompt` responses per prompt from the rollout engines, flattened in prompt order."""
    generations: list[Generation] = roles.rollout.map_shards("generate", _chats(records), sampling_params(cfg))
    return _samples(records, generations)


def sample_fresh(roles: PPORoles, records: list[PromptRecord], cfg: PPOConfig) -> tuple[list[Sample], int]:
    """Samples all from the engines' current policy (`roles.sync.version`), and how many actors restarted.

    A rollout actor that dies mid-batch is restarted by Ray, which re-sends its shard; but the
    restarted engine samples with its starting weights (policy version 0) and has left the sync
    group. So after sampling, rejoin any restarted actor and push it the current policy; if any
    sample then carries another version, sample the whole batch again (rare, so simple beats
    saving the healthy shards). Each try replaces the last, so no prompt is lost or doubled.
    """
    restarts = 0
    version = roles.sync.version
    for _ in range(MAX_RESAMPLES + 1):
        samples = sample_responses(roles, records, cfg)
        restarts += roles.sync.recover()
        version = roles.sync.version
        if all(s.generation.policy_version == version for s in samples):
            return samples, restarts
        log.warning("rl_cai: samples from a restarted rollout engine; sampling again at policy version %d", version)
    raise RuntimeError(
        f"rl_cai: rollout engines kept restarting; no batch at policy version {version} after {MAX_RESAMPLES} resamples"
    )


@dataclass
class _Pending:
    """A batch asked of the engines: its prompts, the calls' references, and the restarts seen when asked."""

    records: list[PromptRecord]
    refs: list[Any]
    restarts_seen: int


class Rollouts:
    """The batches of iterations ``[start, end)``, sampled up to ``max_staleness`` iterations ahead."""

    def __init__(self, roles: PPORoles, cfg: PPOConfig, prompts: Callable[[int], list[PromptRecord]], end: int) -> None:
        self.roles, self.cfg, self.prompts, self.end = roles, cfg, prompts, end
        self.max_staleness = cfg.max_staleness
        self.pending: dict[int, _Pending] = {}

    def take(self, iteration: int, learner_version: int) -> Taken:
        """The batch the learner at `learner_version` trains on in `iteration`; then ask for the next ones.

        Call it after the previous update's weight sync, so that `roles.sync.version` is the
        learner's. The batches of iterations ``iteration + 1 .. iteration + max_staleness`` are
        submitted before this returns, so they are sampled while the learner trains.
        """
        self._submit(iteration)
        pending = self.pending.pop(iteration)
        samples = _samples(pending.records, gather(pending.refs))
        restarts = self.roles.sync.recover()
        dropped = regenerated = 0
        if self.roles.sync.restarts_seen != pending.restarts_seen:
            # A restarted engine may have sampled (part of) any batch in flight with its starting weights.
            regenerated = len(samples)
            stale_ahead = sorted(self.pending)
            self.pending.clear()
            log.warning(
                "rl_cai: a rollout actor restarted while iteration %d's batch was sampled; sampling it again at "
                "policy version %d (and iterations %s ahead)",
                iteration,
                self.roles.sync.version,
                stale_ahead or "none",
            )
            samples, more = sample_fresh(self.roles, pending.records, self.cfg)
            restarts += more
        elif any(learner_version - s.generation.policy_version > self.max_staleness for s in samples):
            dropped = len(samples)
            log.warning(
                "rl_cai: iteration %d's batch lags the learner (version %d) by more than ppo.max_staleness=%d; "
                "dropped, sampling again",
                iteration,
                learner_version,
                self.max_staleness,
            )
            samples, more = sample_fresh(self.roles, pending.records, self.cfg)
            restarts += more
        for ahead in range(iteration + 1, iteration + self.max_staleness + 1):
            self._submit(ahead)
        counts = Counter(learner_version - s.generation.policy_version for s in samples)
        staleness = [counts.get(k, 0) for k in range(max(counts) + 1)]
        return Taken(samples, staleness, dropped, regenerated, restarts)

    def _submit(self, iteration: int) -> None:
        if iteration >= self.end or iteration in self.pending:
            return
        records = self.prompts(iteration)
        refs = self.roles.rollout.submit_shards("generate", _chats(records), sampling_params(self.cfg))
        self.pending[iteration] = _Pending(records, refs, self.roles.sync.restarts_seen)
