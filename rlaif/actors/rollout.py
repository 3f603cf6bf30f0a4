"""The rollout worker: a thin shell over one engine that samples from the policy.

Plain Python, testable in-process; `rlaif.actors.pool` applies `ray.remote` with the
role's resources. Weights arrive as numpy arrays (zero-copy through Ray's object
store, DESIGN §7) and are handed to the engine as torch tensors.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import numpy as np
import torch

from rlaif.engines.base import EngineSpec, Generation, Prompt, SamplingParams, ThroughputStats
from rlaif.engines.factory import build_engine


class RolloutWorker:
    """Holds the policy in an inference engine; samples and takes new weights."""

    def __init__(self, spec: EngineSpec) -> None:
        self.engine = build_engine(spec)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        return self.engine.generate(prompts, params)

    def update_weights(self, named_arrays: Sequence[tuple[str, np.ndarray]], version: int) -> None:
        self.engine.update_weights(((name, torch.from_numpy(a)) for name, a in named_arrays), version)

    def policy_version(self) -> int:
        return self.engine.policy_version

    def stats(self) -> ThroughputStats:
        return self.engine.stats()

    def node(self) -> str:
        """Where this actor runs (host name), for placement checks."""
        return socket.gethostname()
