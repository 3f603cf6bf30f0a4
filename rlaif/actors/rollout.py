"""The rollout worker: a thin shell over one engine that samples from the policy.

Plain Python, testable in-process; `rlaif.actors.pool` applies `ray.remote` with the
role's resources. Weights arrive as numpy arrays (zero-copy through Ray's object
store, docs/design.md §7) and are handed to the engine as torch tensors.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Sequence

import numpy as np
import torch

from rlaif.core.buckets import TensorMeta
from rlaif.engines.base import EngineSpec, Generation, Prompt, SamplingParams, ThroughputStats, WeightLoad
from rlaif.engines.factory import build_engine
from rlaif.engines.weight_sync import TIMEOUT_S, ReceivedState, SyncGroup, SyncStats


class RolloutWorker:
    """Holds the policy in an inference engine; samples and takes new weights."""

    def __init__(self, spec: EngineSpec) -> None:
        self.engine = build_engine(spec)
        self.sync_group: SyncGroup | None = None
        # New on every construction: when Ray restarts a dead actor it re-runs this constructor,
        # so a changed value tells the driver that the engine is back at its starting weights.
        self._incarnation = uuid.uuid4().hex

    def join_sync_group(
        self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str, timeout_s: int = TIMEOUT_S
    ) -> str:
        """Join the learner's broadcast group (rank 0 is the learner); blocks until all members join.

        Any previous group is dropped first (the group is re-formed after a member restarted).
        Returns this actor's incarnation, so the driver knows which life of the actor joined.
        """
        self.sync_group = None
        self.sync_group = SyncGroup(master_addr, master_port, rank, world_size, backend, timeout_s)
        return self._incarnation

    def receive_weights(self, metas: Sequence[TensorMeta], bucket_bytes: int, version: int) -> SyncStats:
        """Take part in one broadcast from the learner, loading each bucket into the engine as it arrives.

        Returns the bytes and buckets received, the seconds until the engine had loaded them all
        (receiving and loading overlap), and the engine's load path (docs/design.md §5).
        """
        if self.sync_group is None:
            raise RuntimeError("receive_weights called before join_sync_group")
        started = time.perf_counter()
        received = ReceivedState(self.sync_group, metas, bucket_bytes)
        try:
            load = self.engine.update_weights(received, version)
        finally:
            # Whatever the engine did, every bucket must be taken, or the group falls out of step.
            received.drain()
        assert received.stats is not None
        return received.stats._replace(seconds=time.perf_counter() - started, path=load.path)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        return self.engine.generate(prompts, params)

    def update_weights(self, named_arrays: Sequence[tuple[str, np.ndarray]], version: int) -> WeightLoad:
        return self.engine.update_weights(((name, torch.from_numpy(a)) for name, a in named_arrays), version)

    def sleep(self) -> None:
        """Free the engine's GPU memory while a colocated learner trains (GPU engines only)."""
        self.engine.sleep()

    def wake_up(self) -> None:
        self.engine.wake_up()

    def incarnation(self) -> str:
        """Which life of this actor this is: a fresh id per construction (so per Ray restart)."""
        return self._incarnation

    def policy_version(self) -> int:
        return self.engine.policy_version

    def stats(self) -> ThroughputStats:
        return self.engine.stats()

    def node(self) -> str:
        """Where this actor runs (host name), for placement checks."""
        return socket.gethostname()
