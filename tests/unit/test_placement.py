"""Placement planning: GPUs given once, memory checked, colocation shares GPUs."""

import pytest

from rlaif.core.placement import (
    NodeSpec,
    PlacementError,
    RoleDemand,
    check_plan,
    engine_gib,
    frozen_model_gib,
    plan_placement,
    trained_model_gib,
)

NODES = [NodeSpec(f"node-{i}", 8, 80.0) for i in range(2)]


def test_memory_model_matches_hand_computation() -> None:
    # 1B params, 4 ranks, ZeRO-3: (2 + 2 + 12) bytes × 1e9 / 4 = 4e9 bytes = 3.725 GiB.
    assert trained_model_gib(1.0, 4, 3) == pytest.approx(4e9 / 2**30)
    # ZeRO-2 keeps whole bf16 weights: (2 + 2/4 + 12/4) × 1e9 bytes.
    assert trained_model_gib(1.0, 4, 2) == pytest.approx(5.5e9 / 2**30)
    # 8B frozen bf16 = 16e9 bytes; the engine splits weights over TP=2 and adds its KV reserve.
    assert frozen_model_gib(8.0, 1, 2) == pytest.approx(16e9 / 2**30)
    assert engine_gib(8.0, 2, 10.0) == pytest.approx(8e9 / 2**30 + 10.0)


def test_disjoint_roles_get_disjoint_gpus() -> None:
    demands = [RoleDemand("learner", 8, 1, 40.0), RoleDemand("rollout", 4, 2, 30.0)]
    plan = plan_placement(NODES, demands)
    check_plan(NODES, plan, demands)
    used = [(a.node, g) for a in plan for g in a.gpus]
    assert len(used) == len(set(used)) == 16
    assert all(len({a.node}) == 1 for a in plan)


def test_too_many_gpus_names_the_role() -> None:
    with pytest.raises(PlacementError, match="'judge'"):
        plan_placement(NODES, [RoleDemand("learner", 16, 1, 10.0), RoleDemand("judge", 1, 1, 10.0)])


def test_a_model_that_does_not_fit_its_gpu_names_the_role() -> None:
    with pytest.raises(PlacementError, match="'rollout'.*90.0 GiB"):
        plan_placement(NODES, [RoleDemand("rollout", 1, 1, 90.0)])


def test_colocated_role_shares_the_hosts_gpus() -> None:
    demands = [RoleDemand("learner", 4, 1, 40.0), RoleDemand("rollout", 2, 2, 60.0, colocate_with="learner")]
    plan = plan_placement(NODES, demands)
    check_plan(NODES, plan, demands)
    learner = {(a.node, g) for a in plan if a.role == "learner" for g in a.gpus}
    rollout = {(a.node, g) for a in plan if a.role == "rollout" for g in a.gpus}
    assert rollout == learner
