"""Connecting to Ray: start a local cluster or join an existing one, and place role groups.

Security defaults: the dashboard binds to 127.0.0.1 unless the config says otherwise,
and Ray's token authentication (on by default in Ray 2.60) is left on. Ray 2.60's own
gRPC services listen on the node's address (it maps 127.0.0.1 to that address itself),
and require the token.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlaif.core.run_logs import copy_worker_logs
from rlaif.errors import ClusterUnreachableError

log = logging.getLogger(__name__)


# Read by the raylet when it starts: the niceness of the worker processes it spawns.
WORKER_NICENESS_ENV = "RAY_worker_niceness"


@dataclass(frozen=True)
class ClusterSpec:
    address: str | None
    num_cpus: int | None
    num_gpus: int | None
    include_dashboard: bool
    dashboard_host: str
    # Forward every actor's stdout/stderr to the driver's console (off: `save_worker_logs` copies them).
    log_to_driver: bool = True


def connect(spec: ClusterSpec) -> None:
    """Start a local Ray cluster when `address` is unset, else join the one it names."""
    if ray.is_initialized():
        return
    # Engines and trainers inherit this process's environment through Ray workers.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if spec.address:
        # ray.init retries an address that does not answer for minutes: check it answers first.
        probe_address(spec.address)
        try:
            ray.init(address=spec.address, log_to_driver=spec.log_to_driver)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterUnreachableError(
                f"cluster.address={spec.address!r}: cannot join the Ray cluster ({reason})"
            ) from exc
        log.info("joined Ray cluster at %s", spec.address)
        return
    start_local(
        num_cpus=spec.num_cpus,
        num_gpus=spec.num_gpus,
        include_dashboard=spec.include_dashboard,
        dashboard_host=spec.dashboard_host,
        log_to_driver=spec.log_to_driver,
    )
    log.info("started a local Ray cluster: %s", ray.cluster_resources())


def start_local(**init_kwargs: Any) -> None:
    """``ray.init(**init_kwargs)`` for a new local cluster whose workers run at nice 0.

    Ray starts workers at nice 15, below its own raylet, GCS and driver threads, which wake
    often; each wake-up preempts one of a worker's torch threads and stalls the rest at the
    next barrier. On 2 idle cores a 1024² matmul ran at 72-106 GFLOP/s in a nice-15 worker
    and 129-140 at nice 0; a PPO learner step took 30% longer. Our actors are the work.
    """
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")
    ray.init(**init_kwargs)


def save_worker_logs(dest: Path) -> list[Path]:
    """Copy this job's actor and task logs from Ray's session folder on this node into `dest`.

    Files are named ``<actor class>-<pid>.out|.err`` (`rlaif.core.run_logs.copy_worker_logs`).
    Returns the copies; nothing when Ray is not running here or keeps its logs elsewhere.
    """
    if not ray.is_initialized():
        return []
    try:
        node = ray._private.worker._global_node  # Ray keeps no public handle on its session folder
        logs = Path(node.get_logs_dir_path())
    except Exception:  # a Ray client connection (ray://) has no local node
        return []
    return copy_worker_logs(logs, ray.get_runtime_context().get_job_id(), dest)


def probe_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when `address` ("host:port" or "ray://host:port") takes no TCP connection.

    "auto" and addresses without a port are left to Ray.
    """
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterUnreachableError(
            f"cluster.address={address!r}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start one with `ray start --head` or leave cluster.address unset for a local cluster"
        ) from None


@dataclass(frozen=True)
class RoleGroupSpec:
    """Resources of one role's actors: `num_workers` bundles of CPUs and GPUs."""

    name: str
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    strategy: str = "PACK"

    def bundles(self) -> list[dict[str, float]]:
        bundle = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            bundle["GPU"] = self.gpus_per_worker
        return [dict(bundle) for _ in range(self.num_workers)]


def reserve(spec: RoleGroupSpec, timeout_s: float = 120.0) -> PlacementGroup:
    """A ready placement group for the role; fails with a clear line if the cluster lacks room."""
    pg = placement_group(spec.bundles(), strategy=spec.strategy, name=f"rlaif-{spec.name}")
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        ray.util.remove_placement_group(pg)
        raise RuntimeError(
            f"role {spec.name!r}: the cluster cannot place {spec.num_workers} × {spec.bundles()[0]} "
            f"({spec.strategy}) within {timeout_s:.0f} s; cluster has {ray.cluster_resources()}"
        )
    return pg


def in_bundle(pg: PlacementGroup, index: int) -> PlacementGroupSchedulingStrategy:
    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index)
