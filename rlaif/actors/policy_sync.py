"""Weight sync from the PPO learner group to every rollout engine (docs/design.md §5).

`PolicySync` joins learner rank 0 and every rollout actor into one broadcast group
(gloo on CPU, NCCL on GPU; `rlaif.engines.weight_sync.SyncGroup`). Each
`push(version)` then starts every engine's receive, has every learner rank take part
in the send (under ZeRO-3 each bucket is gathered collectively before rank 0
broadcasts it), and waits until each engine has loaded the new weights and taken the
new policy version.

A rollout actor that dies is restarted by Ray (`rlaif.actors.pool`) with its starting
weights, at policy version 0, and outside the group. `rejoin_restarted` notices that (each
actor's incarnation changes with every construction) and re-forms the group with all
members; `recover` also pushes the current policy again. `push` calls `rejoin_restarted`
first, so a push never waits on a member that is gone.

    sync = PolicySync(learner_group, rollout_pool, backend="gloo", bucket_bytes=64 << 20)
    report = sync.push(version=1)      # report.bytes, report.seconds, report.load_paths, report.restarts
    restarted = sync.recover()         # after sampling: 0, or engines rejoined at sync.version
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import ray

from rlaif.actors.pool import ActorPool
from rlaif.actors.trainer_group import TrainerGroup
from rlaif.engines.weight_sync import TIMEOUT_S, SyncStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncReport:
    """One sync: what moved and how long it took.

    ``seconds`` is the wall time from the first receive call to the last engine's
    load; ``send_seconds`` is rank 0's broadcast (gathers included), which ends once the
    engines have taken the last bucket: they load each bucket as it arrives, so it includes
    their loading of all but the last. ``bytes`` is what each engine received (the same for
    all). ``load_paths`` says how each engine loaded the weights ("direct" or "reload",
    docs/design.md §5). ``restarts`` counts the rollout actors found restarted (and
    rejoined) just before this push.
    """

    version: int
    bytes: int
    buckets: int
    engines: int
    seconds: float
    send_seconds: float
    restarts: int = 0
    load_paths: tuple[str, ...] = ()


class PolicySync:
    """A broadcast group of learner rank 0 (group rank 0) and the rollout actors (ranks 1..n).

    ``version`` is the policy version the engines hold: 0 (the starting weights) until the
    first push.
    """

    def __init__(
        self,
        learner: TrainerGroup,
        rollout: ActorPool,
        backend: str,
        bucket_bytes: int,
        timeout_s: int = TIMEOUT_S,
    ) -> None:
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"weight sync backend must be 'gloo' or 'nccl', got {backend!r}")
        self.learner, self.rollout, self.backend = learner, rollout, backend
        self.bucket_bytes, self.timeout_s, self.version = bucket_bytes, timeout_s, 0
        # Rollout actors found restarted so far: a batch sampled across a change may hold stale samples.
        self.restarts_seen = 0
        self.incarnations: list[str] = []
        self._form_group()
        # Metadata is sent once; put it in the object store so each push passes a reference.
        self.metas: Any = ray.put(ray.get(learner.actors[0].tensor_metas.remote()))

    def _form_group(self) -> None:
        """(Re-)form the group with all members, on a fresh port; each member drops its old group."""
        rank0 = self.learner.actors[0]
        addr, port = ray.get(rank0.sync_address.remote())
        world = 1 + len(self.rollout)
        # Every member blocks in the store's rendezvous until all have arrived, so start them together.
        # A member that never arrives makes the others raise after timeout_s; the driver gives up then too.
        joins = [rank0.join_sync_group.remote(addr, port, world, self.backend, self.timeout_s)]
        joins += [
            a.join_sync_group.remote(addr, port, i + 1, world, self.backend, self.timeout_s)
            for i, a in enumerate(self.rollout.actors)
        ]
        self.incarnations = ray.get(joins, timeout=self.timeout_s + 30)[1:]

    def rejoin_restarted(self) -> int:
        """How many rollout actors were restarted since they joined; if any, re-form the group.

        A restarted engine holds the starting weights, whatever `version` is: call `push`
        (or use `recover`) before sampling from it again.
        """
        now = self.rollout.call_all("incarnation")
        restarted = sum(1 for old, new in zip(self.incarnations, now, strict=True) if old != new)
        if restarted:
            log.warning("weight sync: %d rollout actor(s) restarted; re-forming the sync group", restarted)
            self.restarts_seen += restarted
            self._form_group()
        return restarted

    def recover(self) -> int:
        """Rejoin restarted rollout actors and send them the current policy (`version`); returns how many.

        Call it between a push and the next update (as after sampling): the learner must still
        hold policy `version`, since that is what it sends.
        """
        restarted = self.rejoin_restarted()
        if restarted:
            restarted += self.push(self.version).restarts
        return restarted

    def push(self, version: int) -> SyncReport:
        """Broadcast the learner's current policy to every engine, which then serves `version`."""
        started = time.perf_counter()
        restarts = self.rejoin_restarted()
        receives = [a.receive_weights.remote(self.metas, self.bucket_bytes, version) for a in self.rollout.actors]
        sent: SyncStats = self.learner.run_all("send_weights", self.bucket_bytes)[0]
        received: list[SyncStats] = ray.get(receives, timeout=self.timeout_s + 30)
        if any(r.bytes != sent.bytes for r in received):
            got = [r.bytes for r in received]
            raise RuntimeError(f"weight sync v{version}: sent {sent.bytes} bytes, the engines received {got}")
        self.version = version
        seconds = time.perf_counter() - started
        paths = tuple(r.path for r in received)
        return SyncReport(version, sent.bytes, sent.buckets, len(received), seconds, sent.seconds, restarts, paths)
