"""A pool of engine-holding actors of one role (rollout, critic, judge).

`ray.remote` is applied here, where roles are composed, with the role's resources;
each actor sits in its own bundle of the role's placement group. Work is split into
contiguous shards, one per actor, and results come back in input order.

Faults: every actor is created with ``max_restarts`` and ``max_task_retries``. An actor
whose process dies (killed, out of memory) is restarted by Ray in its bundle, which
re-runs its constructor and so rebuilds its engine from the same arguments, and the
shard it was working on is sent to it again. The caller sees one result per shard:
no record lost or duplicated. A restarted engine holds the weights it was built with
(the starting policy) at policy version 0 and has left PPO's weight-sync group; in
`rl_cai`, `rlaif.actors.policy_sync.PolicySync` notices the new incarnation, re-forms the
group and pushes the current policy, and the stage samples that iteration's batch again
(`rlaif.stages.ppo_rollouts.sample_fresh`, metric ``ppo/actor_restarts``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import ray
from ray.util.placement_group import PlacementGroup

from rlaif.actors.cluster import RoleGroupSpec, in_bundle, reserve

T = TypeVar("T")

# How often Ray restarts a dead actor, and re-sends a call that its death interrupted.
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3


class EngineResources(Protocol):
    """A role's CPUs per actor and its OpenMP threads (`rlaif.config.RoleResources`, ``cluster.<role>``)."""

    @property
    def cpus_per_worker(self) -> float: ...

    @property
    def threads_per_worker(self) -> int | None: ...


def role_threads(role: EngineResources) -> int:
    """The OpenMP threads an actor of `role` runs: `threads_per_worker`, else its CPUs rounded down (at least 1)."""
    return role.threads_per_worker or max(1, int(role.cpus_per_worker))


def engine_env(role: EngineResources) -> dict[str, str]:
    """Environment for an actor of `role` that holds a vLLM engine in-process (docs/design.md §5, §7).

    It takes the role's resources whole, so a caller cannot pass the CPUs and drop the thread count.
    """
    env = {
        # The engine runs inside the actor, so received tensors go straight to the worker.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "OMP_NUM_THREADS": str(role_threads(role)),
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key in ("RLAIF_CACHE_DIR", "HF_HOME", "HF_HUB_OFFLINE", "VLLM_CPU_OMP_THREADS_BIND"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


class ActorPool:
    """`num_workers` actors of `cls`, each built with `args`, placed per `spec`."""

    def __init__(
        self, cls: type, spec: RoleGroupSpec, args: tuple[Any, ...], env: dict[str, str], wait: bool = True
    ) -> None:
        """Reserve the placement group, start the actors and, with `wait`, wait until every one is built.

        With ``wait=False`` the constructor returns once the actors are requested, and
        `wait_ready` does the waiting: so several roles start side by side (docs/design.md §2).
        """
        self.spec = spec
        self.placement: PlacementGroup | None = reserve(spec)
        self.actors: list[Any] = []
        self._starting: list[ray.ObjectRef[Any]] | None = None
        try:
            remote_cls = ray.remote(
                num_cpus=spec.cpus_per_worker,
                num_gpus=spec.gpus_per_worker,
                max_restarts=MAX_RESTARTS,
                max_task_retries=MAX_TASK_RETRIES,
            )(cls)
            self.actors = [
                remote_cls.options(
                    scheduling_strategy=in_bundle(self.placement, i),
                    runtime_env={"env_vars": env},
                    name=None,
                ).remote(*args)
                for i in range(spec.num_workers)
            ]
            self._starting = [a.__ray_ready__.remote() for a in self.actors]
        except BaseException:
            self.shutdown()
            raise
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every actor's constructor (engine start-up) has finished; a no-op once it has.

        Failures surface here, not mid-batch, raised as Ray gives them (`ray.get` of every
        actor's ready call), once the pool's actors are killed and its placement group removed.
        """
        if self._starting is None:
            return
        try:
            ray.get(self._starting)
        except BaseException:
            self.shutdown()
            raise
        self._starting = None

    def __len__(self) -> int:
        return len(self.actors)

    def map_shards(self, method: str, items: Sequence[T], *args: Any) -> list[Any]:
        """Call `method(shard, *args)` on every actor with a contiguous shard; concatenate in order."""
        return gather(self.submit_shards(method, items, *args))

    def submit_shards(self, method: str, items: Sequence[T], *args: Any) -> list[ray.ObjectRef]:
        """`map_shards` without waiting: one reference per non-empty shard, for `gather`.

        Each actor runs its calls in the order they were made, so a call submitted later (a
        weight sync, say) runs on that actor after this one.
        """
        shards = split_evenly(items, len(self.actors))
        return [getattr(a, method).remote(s, *args) for a, s in zip(self.actors, shards, strict=True) if s]

    def call_all(self, method: str, *args: Any) -> list[Any]:
        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def locations(self) -> list[dict[str, Any]]:
        """Where each actor runs now: its index, Ray node id, node IP and process id."""
        found = ray.get([a.__ray_call__.remote(_where) for a in self.actors])
        return [{"index": i, **where} for i, where in enumerate(found)]

    def shutdown(self) -> None:
        """Kill the actors and free their placement group; the pool is unusable afterwards."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.placement is not None:
            ray.util.remove_placement_group(self.placement)
            self.placement = None


def gather(refs: Sequence[ray.ObjectRef]) -> list[Any]:
    """Wait for `submit_shards`' calls and concatenate their results in shard order."""
    return [item for part in ray.get(list(refs)) for item in part]


def _where(actor: Any) -> dict[str, Any]:
    """Run inside an actor (through ``__ray_call__``): its node and process."""
    node_ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": node_ip, "pid": os.getpid()}


def split_evenly(items: Sequence[T], parts: int) -> list[list[T]]:
    """Contiguous shards whose sizes differ by at most one, in order."""
    size, extra = divmod(len(items), parts)
    shards, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        shards.append(list(items[start:end]))
        start = end
    return shards
