"""A data-parallel DeepSpeed group of trainer ranks, each a Ray actor.

`TrainerGroup(SFTTrainer, spec, trainer_args)` reserves one placement-group
bundle per rank (`spec` gives CPUs, GPUs and the PACK/SPREAD strategy), finds
the node of bundle 0 and a free port there, and starts the ranks with
``rank``, ``world_size``, ``master_addr`` and ``master_port`` added to
`trainer_args`; they rendezvous with each other in their constructors.

Calls fan out to every rank and come back in rank order: `run_all` passes the
same arguments to every rank, `run` one argument tuple per rank, usually the
batch split by `shard`. Collective methods (train steps, saving) must reach
every rank, so if any rank fails the group kills all its actors and raises:
the others would otherwise wait in a collective until the process-group
timeout.

The caller connects to Ray (`rlaif.actors.cluster.connect`); nothing here calls
``ray.init``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import ray
from ray.util.placement_group import PlacementGroup

from rlaif.actors.cluster import RoleGroupSpec, in_bundle, reserve
from rlaif.actors.pool import split_evenly

log = logging.getLogger(__name__)

T = TypeVar("T")

_RANK_ARGS = ("rank", "world_size", "master_addr", "master_port")


class TrainerGroupError(RuntimeError):
    """A rank of a trainer group failed; the group has been shut down."""


# Trainer ranks allocate and free hundreds of MB of activations and gradients per step, and
# DeepSpeed drops every gradient after each optimizer step. glibc's defaults hand blocks over
# 32 MB (and heap tops) back to the kernel on free, so each step faults those pages in again:
# 0.4-0.7 M page faults per PPO update of the embedded model, each page zeroed by the kernel.
# "retain" keeps everything in glibc's heap (no mmap'd blocks, no trimming), so once the heap
# has grown to its peak (two updates) the learner faults no new pages, and its memory stays at
# that peak (6.8 GB for the embedded model's learner). Measured on the 2-core machine beside an
# idle vLLM engine, as in RL-CAI: 11.9-12.5 s per update against 14.1-15.9 s with Ray's jemalloc
# (which this replaced: with decay off its memory grew 0.6 GB per update without bound, with
# decay on it faulted 1.1 M pages per update).
MALLOCS = ("retain", "system")
RETAIN_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
    "MALLOC_TOP_PAD_": str(512 << 20),
    # Torch allocates on the calling thread; two arenas keep OMP workers' rare blocks apart.
    "MALLOC_ARENA_MAX": "2",
}


def malloc_env(malloc: str) -> dict[str, str]:
    """Variables that make a new process's glibc malloc behave as `malloc` ("retain" or "system")."""
    if malloc not in MALLOCS:
        raise ValueError(f"cluster.trainer_malloc must be one of {MALLOCS}, got {malloc!r}")
    return dict(RETAIN_ENV) if malloc == "retain" else {}


def trainer_env(cpus: float, torch_extensions_dir: str, malloc: str = "retain") -> dict[str, str]:
    """Environment variables for a trainer rank's Ray worker."""
    env = {
        **malloc_env(malloc),
        # Ray sets OMP_NUM_THREADS to num_cpus only when unset; say it outright so torch's
        # intra-op pool matches the bundle and co-located ranks do not oversubscribe the cores.
        "OMP_NUM_THREADS": str(max(1, int(cpus))),
        # DeepSpeed compiles its CPU ops (Adam, shared-memory comms) on first use, about a
        # minute each; a fixed directory caches them across workers and runs.
        "TORCH_EXTENSIONS_DIR": torch_extensions_dir,
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key in ("RLAIF_CACHE_DIR", "HF_HOME", "HF_HUB_OFFLINE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def default_torch_extensions_dir() -> str:
    """``$TORCH_EXTENSIONS_DIR`` if set, else ``<rlaif cache>/torch_extensions``."""
    from rlaif.engines.models import cache_dir

    return os.environ.get("TORCH_EXTENSIONS_DIR") or str(cache_dir() / "torch_extensions")


@ray.remote
def _address_and_port() -> tuple[str, int]:
    from rlaif.trainers.distributed import find_free_port

    return ray.util.get_node_ip_address(), find_free_port()


class TrainerGroup:
    """`spec.num_workers` ranks of `trainer_cls`, one per bundle of a placement group."""

    def __init__(
        self,
        trainer_cls: type,
        spec: RoleGroupSpec,
        trainer_args: Mapping[str, Any],
        torch_extensions_dir: str | None = None,
        ready_timeout_s: float = 900.0,
        malloc: str = "retain",
        wait: bool = True,
    ) -> None:
        """Start the ranks and, with `wait`, wait until every constructor (model load, rendezvous) has finished.

        Args:
            trainer_cls: a plain class whose constructor takes `trainer_args` plus
                rank, world_size, master_addr and master_port.
            spec: number of ranks, CPUs and GPUs per rank, placement strategy.
            trainer_args: the trainer's other constructor arguments, the same for every rank.
            torch_extensions_dir: DeepSpeed's op cache; default `default_torch_extensions_dir()`.
            ready_timeout_s: how long the constructors may take (the first run compiles ops).
            malloc: how the ranks' malloc treats freed memory: "retain" (keep it) or "system" (glibc's defaults).
            wait: False to return once the ranks are requested and wait in `wait_ready`, so that
                other roles start beside them (docs/design.md §2). `ready_timeout_s` counts from here.
        """
        clash = sorted(set(_RANK_ARGS) & set(trainer_args))
        if clash:
            raise ValueError(f"trainer_args must not set {clash}: the group assigns them per rank")
        if spec.num_workers < 1 or spec.cpus_per_worker <= 0:
            raise ValueError(f"role {spec.name!r}: need num_workers >= 1 and cpus_per_worker > 0, got {spec}")
        self.spec = spec
        self.world_size = spec.num_workers
        self.placement: PlacementGroup | None = reserve(spec)
        self.actors: list[Any] = []
        self._starting: list[Any] | None = None
        self._ready_timeout_s = ready_timeout_s
        try:
            self.master_addr, self.master_port = ray.get(
                _address_and_port.options(num_cpus=0.01, scheduling_strategy=in_bundle(self.placement, 0)).remote()
            )
            env = trainer_env(spec.cpus_per_worker, torch_extensions_dir or default_torch_extensions_dir(), malloc)
            remote_cls = ray.remote(num_cpus=spec.cpus_per_worker, num_gpus=spec.gpus_per_worker)(trainer_cls)
            for rank in range(self.world_size):
                options = remote_cls.options(
                    scheduling_strategy=in_bundle(self.placement, rank), runtime_env={"env_vars": env}
                )
                self.actors.append(
                    options.remote(
                        **trainer_args,
                        rank=rank,
                        world_size=self.world_size,
                        master_addr=self.master_addr,
                        master_port=self.master_port,
                    )
                )
            self._starting = [a.__ray_ready__.remote() for a in self.actors]
            self._started_at = time.monotonic()
        except BaseException:
            self.shutdown()
            raise
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every rank's constructor has finished; a no-op once it has.

        Raises:
            TrainerGroupError: a rank failed or `ready_timeout_s` passed since the ranks were
                started; the group has been shut down.
        """
        if self._starting is None:
            return
        self._get_all(self._starting, "start", self._ready_timeout_s, since=self._started_at)
        self._starting = None
        log.info("%s: %d ranks up, master %s:%d", self.spec.name, self.world_size, self.master_addr, self.master_port)

    def run(self, method_name: str, per_rank_args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Call ``method_name(*per_rank_args[rank])`` on every rank; results in rank order."""
        if len(per_rank_args) != self.world_size:
            raise ValueError(
                f"run({method_name!r}): got {len(per_rank_args)} argument tuples for {self.world_size} ranks"
            )
        refs = [getattr(a, method_name).remote(*args) for a, args in zip(self.actors, per_rank_args, strict=True)]
        return self._get_all(refs, method_name)

    def run_all(self, method_name: str, *args: Any) -> list[Any]:
        """Call ``method_name(*args)`` on every rank; results in rank order."""
        return self.run(method_name, [args] * self.world_size)

    def shard(self, items: Sequence[T], drop_remainder: bool = True) -> list[list[T]]:
        """Split a global batch into one contiguous shard per rank, in order.

        With `drop_remainder` (for training, where every rank must step on equally
        many examples) each rank gets ``len(items) // world_size`` items and the last
        ``len(items) % world_size`` items are dropped: deterministic, and logged.
        Without it (for evaluation and scoring, which tolerate uneven shards) shard
        sizes differ by at most one and nothing is dropped; concatenating per-rank
        results in rank order gives back the input order.
        """
        if not drop_remainder:
            return split_evenly(items, self.world_size)
        per_rank = len(items) // self.world_size
        if per_rank == 0:
            raise ValueError(f"cannot shard {len(items)} items over {self.world_size} ranks")
        dropped = len(items) - per_rank * self.world_size
        if dropped:
            log.warning("%s: dropping the last %d of %d items to shard evenly", self.spec.name, dropped, len(items))
        return [list(items[r * per_rank : (r + 1) * per_rank]) for r in range(self.world_size)]

    def shutdown(self) -> None:
        """Kill the ranks and free their placement group; the group is unusable afterwards."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.placement is not None:
            ray.util.remove_placement_group(self.placement)
            self.placement = None

    def _get_all(
        self, refs: list[Any], what: str, timeout_s: float | None = None, since: float | None = None
    ) -> list[Any]:
        """Results of `refs` in order; on the first failure (or timeout) shut the group down and raise.

        The timeout counts from `since` (a `time.monotonic()` reading), else from now.
        """
        deadline = None if timeout_s is None else (time.monotonic() if since is None else since) + timeout_s
        pending = list(refs)
        while pending:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = ray.wait(pending, num_returns=1, timeout=remaining)
            if not done:
                self.shutdown()
                raise TrainerGroupError(
                    f"{self.spec.name}: {what} did not finish on every rank within {timeout_s:.0f} s"
                )
            try:
                ray.get(done[0])
            except Exception as exc:
                rank = refs.index(done[0])
                self.shutdown()
                raise TrainerGroupError(f"{self.spec.name}: rank {rank} failed in {what}: {exc}") from exc
        return ray.get(refs)
