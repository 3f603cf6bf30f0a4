"""Rollout workers as real Ray actors over vLLM: placement, generation, weight updates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.pool import ActorPool, engine_env, split_evenly
from rlaif.actors.rollout import RolloutWorker
from rlaif.config import RoleResources
from rlaif.engines.base import EngineSpec, Message, SamplingParams


def test_split_evenly_keeps_order_and_balances() -> None:
    assert split_evenly(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_evenly([1], 3) == [[1], [], []]


@pytest.mark.usefixtures("ray_cluster")
def test_rollout_pool_generates_in_order_and_takes_new_weights(tiny_model: Path) -> None:
    from safetensors.numpy import load_file

    spec = RoleGroupSpec("rollout", num_workers=2, cpus_per_worker=1, gpus_per_worker=0)
    engine = EngineSpec(model_path=str(tiny_model), backend="vllm", max_model_len=256, kv_cache_gib=1)
    pool = ActorPool(RolloutWorker, spec, (engine,), engine_env(RoleResources(cpus_per_worker=1)))
    try:
        prompts = [[Message("user", f"Tell me about the number {i}.")] for i in range(5)]
        greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
        gens = pool.map_shards("generate", prompts, greedy)
        assert len(gens) == 5 and all(g.policy_version == 0 for g in gens)
        # Same prompt on different actors gives the same greedy answer: results come back in input order.
        again = pool.map_shards("generate", prompts[::-1], greedy)[::-1]
        assert [g.completions[0].token_ids for g in gens] == [g.completions[0].token_ids for g in again]

        weights = load_file(str(tiny_model / "model.safetensors"))
        perturbed = [(k, (v * 2.0 if "mlp" in k else v).astype(np.float32)) for k, v in weights.items()]
        pool.call_all("update_weights", perturbed, 1)
        assert pool.call_all("policy_version") == [1, 1]
        changed = pool.map_shards("generate", prompts, greedy)
        assert all(g.policy_version == 1 for g in changed)
        assert [g.completions[0].token_ids for g in changed] != [g.completions[0].token_ids for g in gens]
        assert all(s.generated_tokens > 0 for s in pool.call_all("stats"))
    finally:
        pool.shutdown()
