"""Planning where every actor group goes, without starting anything.

Given a cluster description (nodes × GPUs × memory) and each role's demand (workers,
GPUs per worker, parameters held), `plan_placement` assigns GPUs to every rank and
`estimate_memory_gib` says what each rank needs, so a user can check a large
experiment on a laptop: every GPU used by at most one role (unless two roles are
declared colocated and share it) and every model fitting its GPU's memory.

Memory model (per rank, GiB), standard mixed-precision accounting (ZeRO paper,
Rajbhandari et al. 2020, §3): a trained model holds 2 bytes/param of bf16 weights,
2 of gradients and 12 of fp32 Adam state + master weights, divided over the ranks
by ZeRO stage (1: optimizer state, 2: + gradients, 3: + weights); a frozen model
holds 2 bytes/param (÷ ranks under ZeRO-3); an inference engine holds its weights
÷ tensor-parallel degree plus its KV-cache reserve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpus: int
    gpu_memory_gib: float


@dataclass(frozen=True)
class RoleDemand:
    """One role group: `workers` ranks of `gpus_per_worker` whole GPUs each.

    `colocate_with` names a role whose GPUs this role shares (the engine sleeps while
    the learner trains); a colocated role takes no GPUs of its own.
    """

    role: str
    workers: int
    gpus_per_worker: int
    memory_gib: float
    colocate_with: str | None = None


@dataclass(frozen=True)
class Assignment:
    role: str
    rank: int
    node: str
    gpus: tuple[int, ...]
    memory_gib: float


class PlacementError(ValueError):
    """The roles do not fit the described cluster."""


def trained_model_gib(params_b: float, ranks: int, zero_stage: int, activations_gib: float = 0.0) -> float:
    """Per-rank memory of a model trained with Adam in bf16 under ZeRO (see module docstring)."""
    p = params_b * 1e9
    weights, grads, optim = 2 * p, 2 * p, 12 * p
    if zero_stage >= 1:
        optim /= ranks
    if zero_stage >= 2:
        grads /= ranks
    if zero_stage >= 3:
        weights /= ranks
    return (weights + grads + optim) / GIB + activations_gib


def frozen_model_gib(params_b: float, ranks: int, zero_stage: int) -> float:
    """Per-rank memory of a frozen bf16 model (reference policy, reward scorer)."""
    weights = 2 * params_b * 1e9
    return (weights / ranks if zero_stage >= 3 else weights) / GIB


def engine_gib(params_b: float, tensor_parallel: int, kv_cache_gib: float) -> float:
    """Per-GPU memory of a bf16 inference engine with a KV-cache reserve."""
    return 2 * params_b * 1e9 / tensor_parallel / GIB + kv_cache_gib


def plan_placement(nodes: Sequence[NodeSpec], demands: Sequence[RoleDemand]) -> list[Assignment]:
    """Assign whole GPUs to each rank, first fit, keeping a rank's GPUs on one node.

    Raises `PlacementError` naming the role when GPUs run out or a rank's memory
    exceeds its GPUs' memory.
    """
    free = {n.name: list(range(n.gpus)) for n in nodes}
    memory = {n.name: n.gpu_memory_gib for n in nodes}
    by_role: dict[str, list[Assignment]] = {}
    out: list[Assignment] = []
    for d in sorted(demands, key=lambda d: d.colocate_with is not None):
        if d.colocate_with is not None:
            placed = _colocate(d, by_role.get(d.colocate_with), memory)
        else:
            placed = [_take(d, rank, free, memory) for rank in range(d.workers)]
        by_role[d.role] = placed
        out.extend(placed)
    return out


def _take(d: RoleDemand, rank: int, free: dict[str, list[int]], memory: dict[str, float]) -> Assignment:
    for node, gpus in free.items():
        if len(gpus) >= d.gpus_per_worker:
            per_gpu = d.memory_gib / max(d.gpus_per_worker, 1)
            if per_gpu > memory[node]:
                raise PlacementError(
                    f"role {d.role!r}: needs {per_gpu:.1f} GiB per GPU, more than the {memory[node]:.0f} GiB of {node}"
                )
            taken = tuple(gpus[: d.gpus_per_worker])
            del gpus[: d.gpus_per_worker]
            return Assignment(d.role, rank, node, taken, d.memory_gib)
    raise PlacementError(f"role {d.role!r}: no node has {d.gpus_per_worker} free GPU(s) left for rank {rank}")


def _colocate(d: RoleDemand, host: list[Assignment] | None, memory: dict[str, float]) -> list[Assignment]:
    if host is None:
        raise PlacementError(f"role {d.role!r}: colocated with {d.colocate_with!r}, which is not placed")
    gpus = [(a.node, g, a.memory_gib / len(a.gpus)) for a in host for g in a.gpus]
    if len(gpus) < d.workers * d.gpus_per_worker:
        raise PlacementError(f"role {d.role!r}: {d.colocate_with!r} has {len(gpus)} GPUs, too few to colocate on")
    out = []
    for rank in range(d.workers):
        mine = gpus[rank * d.gpus_per_worker : (rank + 1) * d.gpus_per_worker]
        node = mine[0][0]
        # Colocated roles alternate (the engine sleeps while the learner trains): the larger
        # of the two footprints must fit, not their sum.
        need = max(d.memory_gib / d.gpus_per_worker, max(m for _, _, m in mine))
        if need > memory[node] or len({n for n, _, _ in mine}) > 1:
            raise PlacementError(f"role {d.role!r}: rank {rank} does not fit beside {d.colocate_with!r} on {node}")
        out.append(Assignment(d.role, rank, node, tuple(g for _, g, _ in mine), d.memory_gib))
    return out


def check_plan(nodes: Sequence[NodeSpec], plan: Sequence[Assignment], demands: Sequence[RoleDemand]) -> None:
    """Every GPU used by at most one non-colocated role; raise `PlacementError` otherwise."""
    colocated = {d.role for d in demands if d.colocate_with is not None}
    seen: dict[tuple[str, int], str] = {}
    for a in plan:
        if a.role in colocated:
            continue
        for g in a.gpus:
            if (a.node, g) in seen:
                raise PlacementError(f"GPU {g} of {a.node} is given to both {seen[(a.node, g)]!r} and {a.role!r}")
            seen[(a.node, g)] = f"{a.role}#{a.rank}"
    known = {n.name: n.gpus for n in nodes}
    for a in plan:
        if a.node not in known or any(g >= known[a.node] for g in a.gpus):
            raise PlacementError(f"role {a.role!r} rank {a.rank}: GPU outside the cluster ({a.node}, {a.gpus})")
