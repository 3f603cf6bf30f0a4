"""The dry run: where every actor group of a configured run goes, and what it needs.

    python -m rlaif.run +experiment=large dry_run=true

Maps the run config onto `rlaif.core.placement` demands and prints, for the cluster
described in ``plan`` (nodes × GPUs × GPU memory), the node and GPUs of every rank of
every role, the memory each needs, and the weight-sync topology of RL-CAI. One plan
per stage: a stage starts its actor groups together and releases them at its end, so
GPUs are shared between stages but never within one (except a declared colocation).
Parameter counts come from ``plan.*_params_b``, so nothing is downloaded; nothing
here imports ray, torch or an engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rlaif.config import RoleResources, RunConfig
from rlaif.core.placement import (
    Assignment,
    NodeSpec,
    PlacementError,
    RoleDemand,
    check_plan,
    engine_gib,
    frozen_model_gib,
    plan_placement,
    trained_model_gib,
)

# The actor groups each stage starts (rlaif.stages.*).
STAGE_ROLES: dict[str, tuple[str, ...]] = {
    "smoke": ("rollout",),
    "sl_cai": ("critic",),
    "sft": ("sft_trainer",),
    "preferences": ("rollout", "judge"),
    "reward_model": ("reward_trainer",),
    "rl_cai": ("learner", "rollout", "reward_scorer"),
    "evaluate": ("rollout", "judge", "reward_scorer"),
}
ENGINE_ROLES = ("rollout", "critic", "judge")
CPU_NODE = "any"


@dataclass(frozen=True)
class StagePlan:
    stage: str
    demands: tuple[RoleDemand, ...]
    # Every rank of every role; CPU-only roles get node "any" and no GPUs.
    assignments: tuple[Assignment, ...]


@dataclass(frozen=True)
class SyncPlan:
    """Learner rank 0 broadcasts the policy to every rollout engine after each PPO update."""

    backend: str
    source: Assignment
    targets: tuple[Assignment, ...]
    bucket_mb: int
    bytes_per_sync: int
    buckets: int


@dataclass(frozen=True)
class RunPlan:
    nodes: tuple[NodeSpec, ...]
    stages: tuple[StagePlan, ...]
    sync: SyncPlan | None


def build_plan(run: RunConfig) -> RunPlan:
    """The placement of every stage's roles; raises `PlacementError` naming the role that does not fit."""
    p = run.plan
    nodes = tuple(NodeSpec(f"node-{i}", p.gpus_per_node, p.gpu_memory_gib) for i in range(p.nodes))
    stages = tuple(_plan_stage(run, nodes, s) for s in run.stages)
    rl = next((s for s in stages if s.stage == "rl_cai"), None)
    return RunPlan(nodes, stages, None if rl is None else _sync_plan(run, rl))


def stage_roles(run: RunConfig, stage: str) -> tuple[str, ...]:
    roles = STAGE_ROLES[stage]
    if stage == "rl_cai" and run.ppo.reward != "reward_model":
        return tuple(r for r in roles if r != "reward_scorer")  # a rule reward runs in the driver
    return roles


def _plan_stage(run: RunConfig, nodes: tuple[NodeSpec, ...], stage: str) -> StagePlan:
    demands = tuple(role_demand(run, stage, role) for role in stage_roles(run, stage))
    on_gpus = [d for d in demands if d.gpus_per_worker > 0]
    placed = plan_placement(nodes, on_gpus)
    check_plan(nodes, placed, on_gpus)
    on_cpus = [
        Assignment(d.role, r, CPU_NODE, (), d.memory_gib)
        for d in demands
        if d.gpus_per_worker == 0
        for r in range(d.workers)
    ]
    return StagePlan(stage, demands, tuple(placed + on_cpus))


def role_demand(run: RunConfig, stage: str, role: str) -> RoleDemand:
    """Workers, whole GPUs per worker and memory per worker (GiB) of one role in one stage."""
    r: RoleResources = getattr(run.cluster, role)
    gpus = math.ceil(r.gpus_per_worker)
    colocated = stage == "rl_cai" and role == "rollout" and run.ppo.placement == "colocated"
    if colocated:
        _check_colocation(run)
    engine = role in ENGINE_ROLES
    memory = _engine_memory(run, role, gpus) if engine else _trainer_memory(run, role, r.num_workers)
    return RoleDemand(role, r.num_workers, gpus, memory, "learner" if colocated else None)


def _params(run: RunConfig, role: str) -> float:
    p = run.plan
    if role == "judge":
        return p.judge_params_b or p.policy_params_b
    if role in ("reward_trainer", "reward_scorer"):
        return p.reward_params_b or p.policy_params_b
    return p.policy_params_b


def _engine_memory(run: RunConfig, role: str, gpus: int) -> float:
    """Weights split over tensor-parallel GPUs plus the KV-cache reserve (engine.kv_cache_gib) on each."""
    e = run.engine
    tp = e.tensor_parallel_size
    if gpus and gpus != tp:
        raise PlacementError(
            f"role {role!r}: cluster.{role}.gpus_per_worker rounds up to {gpus} GPU(s) but "
            f"engine.tensor_parallel_size is {tp}; an engine needs exactly its tensor-parallel GPUs"
        )
    per_gpu = engine_gib(_params(run, role), tp, e.kv_cache_gib)
    usable = e.gpu_memory_utilization * run.plan.gpu_memory_gib
    if gpus and per_gpu > usable:
        raise PlacementError(
            f"role {role!r}: needs {per_gpu:.1f} GiB per GPU (weights / TP {tp} + {e.kv_cache_gib:g} GiB KV), more "
            f"than engine.gpu_memory_utilization x {run.plan.gpu_memory_gib:g} GiB = {usable:.1f} GiB"
        )
    return per_gpu * max(gpus, 1)


def _trainer_memory(run: RunConfig, role: str, ranks: int) -> float:
    """Per-rank memory under ZeRO (bf16 mixed-precision accounting, `rlaif.core.placement`)."""
    z, act = run.deepspeed.zero_stage, run.plan.activations_gib
    policy, reward = run.plan.policy_params_b, _params(run, "reward_trainer")
    if role == "sft_trainer":
        return trained_model_gib(policy, ranks, z, act)
    if role == "reward_trainer":
        return trained_model_gib(reward, ranks, z, act)
    if role == "learner":
        # Actor and value model (from the reward model) trained; the reference is a whole frozen copy per rank.
        # A critic-free estimator (ppo.advantage grpo, rloo, reinforce_pp) has no value model.
        critic = trained_model_gib(reward, ranks, z) if run.ppo.advantage == "gae" else 0.0
        return trained_model_gib(policy, ranks, z, act) + critic + frozen_model_gib(policy, 1, 0)
    if role == "reward_scorer":
        return frozen_model_gib(reward, 1, 0) + act
    raise ValueError(f"unknown role {role!r}")


def _check_colocation(run: RunConfig) -> None:
    """The rules of `rlaif.stages.ppo_roles.role_specs`, plus memory: an awake engine takes
    engine.gpu_memory_utilization of its GPU while the learner keeps its weights and optimizer state."""
    learner, rollout = run.cluster.learner, run.cluster.rollout
    shares = (learner.gpus_per_worker, rollout.gpus_per_worker)
    if learner.num_workers != rollout.num_workers or not all(0 < g < 1 for g in shares) or sum(shares) > 1:
        raise PlacementError(
            "ppo.placement=colocated needs as many rollout workers as learner ranks and fractional GPUs "
            f"summing to <= 1 (e.g. 0.5 each); got learner {learner}, rollout {rollout}"
        )
    gpu = run.plan.gpu_memory_gib
    engine_share = run.engine.gpu_memory_utilization * gpu
    learner_gib = _trainer_memory(run, "learner", learner.num_workers)
    if learner_gib + engine_share > gpu:
        raise PlacementError(
            f"role 'rollout': colocated with the learner, {learner_gib:.1f} GiB (learner) + "
            f"{engine_share:.1f} GiB (engine.gpu_memory_utilization x {gpu:g}) exceeds the {gpu:g} GiB GPU; "
            "lower engine.gpu_memory_utilization or add learner ranks"
        )


def _sync_plan(run: RunConfig, rl: StagePlan) -> SyncPlan:
    learner = next(a for a in rl.assignments if a.role == "learner" and a.rank == 0)
    engines = tuple(a for a in rl.assignments if a.role == "rollout")
    backend = run.ppo.sync_backend
    if backend == "auto":  # as rlaif.stages.ppo_roles.sync_backend decides
        backend = "nccl" if run.engine.device == "cuda" and run.ppo.placement == "disaggregated" else "gloo"
    width = 4 if run.engine.dtype == "float32" else 2
    total = round(run.plan.policy_params_b * 1e9) * width
    bucket = run.ppo.sync_bucket_mb << 20
    return SyncPlan(backend, learner, engines, run.ppo.sync_bucket_mb, total, math.ceil(total / bucket))


def _where(a: Assignment) -> str:
    if not a.gpus:
        return f"{a.node} (CPU)"
    return f"{a.node} GPU {','.join(map(str, a.gpus))}"


def render(run: RunConfig, plan: RunPlan) -> str:
    """The plan as text: one table per stage, then the weight-sync topology."""
    p = run.plan
    total_gpus = p.nodes * p.gpus_per_node
    lines = [
        f"dry run: {run.name} on {p.nodes} node(s) x {p.gpus_per_node} GPU(s) x {p.gpu_memory_gib:g} GiB; "
        f"engine {run.engine.backend} TP {run.engine.tensor_parallel_size}, {run.engine.dtype}; "
        f"ZeRO-{run.deepspeed.zero_stage}; nothing started",
    ]
    for s in plan.stages:
        used = sum(len(a.gpus) for a in s.assignments if not _colocated(s, a.role))
        lines.append(f"\nstage {s.stage}: {used}/{total_gpus} GPUs")
        lines.append(f"  {'role':15s} {'rank':>4s}  {'placement':24s} {'memory':16s} note")
        demands = {d.role: d for d in s.demands}
        for a in s.assignments:
            d = demands[a.role]
            per_gpu = a.memory_gib / max(len(a.gpus), 1)
            note = f"colocated with {d.colocate_with} (sleeps while it trains)" if d.colocate_with else ""
            if a.role == "learner":
                note = ", ".join(filter(None, (_learner_models(run), note)))
            memory = f"{per_gpu:6.1f} GiB/{'GPU' if a.gpus else 'host'}"
            lines.append(f"  {a.role:15s} {a.rank:4d}  {_where(a):24s} {memory:16s} {note}".rstrip())
    if plan.sync is not None:
        sy = plan.sync
        nodes = sorted({t.node for t in sy.targets})
        lines.append(
            f"\nweight sync ({sy.backend}): learner rank 0 at {_where(sy.source)} -> {len(sy.targets)} rollout "
            f"engine(s) on {', '.join(nodes)}; {sy.bytes_per_sync / 2**30:.2f} GiB per sync in {sy.buckets} "
            f"bucket(s) of {sy.bucket_mb} MB"
            + (
                f" (ZeRO-3: all {_learner_ranks(plan)} learner ranks gather each bucket)"
                if run.deepspeed.zero_stage == 3
                else ""
            )
        )
        for t in sy.targets:
            lines.append(f"  -> rollout {t.rank:3d} at {_where(t)}")
    return "\n".join(lines)


def _learner_models(run: RunConfig) -> str:
    if run.ppo.advantage == "gae":
        return "actor + critic + reference"
    return f"actor + reference (ppo.advantage={run.ppo.advantage}: no critic)"


def _colocated(s: StagePlan, role: str) -> bool:
    return any(d.role == role and d.colocate_with for d in s.demands)


def _learner_ranks(plan: RunPlan) -> int:
    return sum(1 for s in plan.stages if s.stage == "rl_cai" for a in s.assignments if a.role == "learner")


def dry_run(run: RunConfig) -> str:
    """Plan and render; a role that does not fit raises `PlacementError` (a ValueError: one-line error, exit 1)."""
    return render(run, build_plan(run))
