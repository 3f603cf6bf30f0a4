"""Weight sync from the PPO learner group to every rollout engine (DESIGN §5).

`PolicySync` joins learner rank 0 and every rollout actor into one broadcast group
(gloo on CPU, NCCL on GPU; `rlaif.engines.weight_sync.SyncGroup`), once. Each
`push(version)` then starts every engine's receive, has every learner rank take part
in the send (under ZeRO-3 each bucket is gathered collectively before rank 0
broadcasts it), and waits until each engine has loaded the new weights and taken the
new policy version.

    sync = PolicySync(learner_group, rollout_pool, backend="gloo", bucket_bytes=64 << 20)
    report = sync.push(version=1)      # report.bytes, report.seconds
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ray

from rlaif.actors.pool import ActorPool
from rlaif.actors.trainer_group import TrainerGroup
from rlaif.engines.weight_sync import SyncStats


@dataclass(frozen=True)
class SyncReport:
    """One sync: what moved and how long it took.

    ``seconds`` is the wall time from the first receive call to the last engine's
    reload; ``send_seconds`` is rank 0's broadcast alone (gathers included).
    ``bytes`` is what each engine received (the same for all).
    """

    version: int
    bytes: int
    buckets: int
    engines: int
    seconds: float
    send_seconds: float


class PolicySync:
    """A broadcast group of learner rank 0 (group rank 0) and the rollout actors (ranks 1..n)."""

    def __init__(self, learner: TrainerGroup, rollout: ActorPool, backend: str, bucket_bytes: int) -> None:
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"weight sync backend must be 'gloo' or 'nccl', got {backend!r}")
        self.learner, self.rollout, self.bucket_bytes = learner, rollout, bucket_bytes
        rank0 = learner.actors[0]
        addr, port = ray.get(rank0.sync_address.remote())
        world = 1 + len(rollout)
        # Every member blocks in the store's rendezvous until all have arrived, so start them together.
        joins = [rank0.join_sync_group.remote(addr, port, world, backend)]
        joins += [a.join_sync_group.remote(addr, port, i + 1, world, backend) for i, a in enumerate(rollout.actors)]
        ray.get(joins)
        # Metadata is sent once; put it in the object store so each push passes a reference.
        self.metas: Any = ray.put(ray.get(rank0.tensor_metas.remote()))

    def push(self, version: int) -> SyncReport:
        """Broadcast the learner's current policy to every engine, which then serves `version`."""
        started = time.perf_counter()
        receives = [a.receive_weights.remote(self.metas, self.bucket_bytes, version) for a in self.rollout.actors]
        sent: SyncStats = self.learner.run_all("send_weights", self.bucket_bytes)[0]
        received: list[SyncStats] = ray.get(receives)
        if any(r.bytes != sent.bytes for r in received):
            got = [r.bytes for r in received]
            raise RuntimeError(f"weight sync v{version}: sent {sent.bytes} bytes, the engines received {got}")
        return SyncReport(version, sent.bytes, sent.buckets, len(received), time.perf_counter() - started, sent.seconds)
