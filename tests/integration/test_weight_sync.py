"""Weight sync: a learner-side sender broadcasts new weights to vLLM rollout actors over gloo.

After the sync, each rollout engine's greedy output and option log-probs equal those of
the sender's own model on the same prompts, and (direct path, docs/design.md §5) those of a
vLLM engine that loaded the same weights from disk.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import ray
import torch

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.pool import ActorPool, engine_env
from rlaif.actors.rollout import RolloutWorker
from rlaif.config import RoleResources
from rlaif.engines.base import EngineSpec, Message, OptionRequest, SamplingParams
from rlaif.engines.hf_engine import TransformersEngine
from rlaif.engines.weight_sync import SyncGroup, SyncStats, send_state, tensor_metas

# Ray workers cannot import test modules: ship this module's classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

PROMPTS = [[Message("user", "Name a colour.")], "Once upon a time"]
OPTIONS = [OptionRequest("Pick one: (", ("A", "B"))]


class Sender:
    """Stands in for the learner's rank 0: a transformers model whose weights are changed, then sent."""

    def __init__(self, model_path: str) -> None:
        self.engine = TransformersEngine(EngineSpec(model_path=model_path, backend="transformers", max_model_len=256))
        self.group: SyncGroup | None = None

    def address(self) -> tuple[str, int]:
        from rlaif.trainers.distributed import find_free_port

        return ray.util.get_node_ip_address(), find_free_port()

    def perturb(self, seed: int) -> None:
        torch.manual_seed(seed)
        with torch.no_grad():
            # Every parameter, the tied embedding / output head included.
            for p in self.engine.model.parameters():
                p.add_(torch.randn_like(p) * 0.5)

    def metas(self) -> list:
        return tensor_metas(self.engine.model.state_dict().items())

    def join(self, addr: str, port: int, world: int) -> None:
        self.group = SyncGroup(addr, port, 0, world, "gloo")

    def send(self, bucket_bytes: int) -> SyncStats:
        assert self.group is not None
        state = self.engine.model.state_dict()
        return send_state(self.group, list(state.values()), self.metas(), bucket_bytes)

    def outputs(self) -> tuple[list, list]:
        greedy = self.engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=10))
        return [g.completions[0].token_ids for g in greedy], [s.logprobs for s in self.engine.score_options(OPTIONS)]

    def shared_memory(self) -> bool:
        assert self.group is not None
        return self.group.shared_memory

    def save(self, dest: str) -> None:
        """Write the current (perturbed) weights as a model folder, for an engine that loads them from disk."""
        self.engine.model.save_pretrained(dest, safe_serialization=True)
        self.engine.tokenizer.save_pretrained(dest)


class SyncedRollout(RolloutWorker):
    def outputs(self) -> tuple[list, list]:
        greedy = self.engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=10))
        return [g.completions[0].token_ids for g in greedy], [s.logprobs for s in self.engine.score_options(OPTIONS)]

    def greedy_logprobs(self) -> list[tuple[float, ...]]:
        greedy = self.engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=10))
        return [g.completions[0].logprobs for g in greedy]


@pytest.mark.usefixtures("ray_cluster")
def test_broadcast_sync_makes_rollout_engines_match_the_learner(tiny_model: Path) -> None:
    sender = ray.remote(num_cpus=0)(Sender).remote(str(tiny_model))
    spec = RoleGroupSpec("rollout", num_workers=2, cpus_per_worker=1, gpus_per_worker=0)
    engine = EngineSpec(model_path=str(tiny_model), backend="vllm", max_model_len=256)
    pool = ActorPool(SyncedRollout, spec, (engine,), engine_env(RoleResources(cpus_per_worker=1)))
    try:
        addr, port = ray.get(sender.address.remote())
        world = 1 + len(pool)
        joins = [sender.join.remote(addr, port, world)]
        joins += [a.join_sync_group.remote(addr, port, i + 1, world, "gloo") for i, a in enumerate(pool.actors)]
        ray.get(joins)
        # All members on one node: the bytes go through the learner's shared-memory file.
        assert ray.get(sender.shared_memory.remote())
        metas = ray.get(sender.metas.remote())
        before = pool.call_all("outputs")
        for version in (1, 2):
            ray.get(sender.perturb.remote(version))
            # A small bucket size forces many buckets; every member takes part in each broadcast.
            sent = sender.send.remote(256 * 1024)
            received = [a.receive_weights.remote(metas, 256 * 1024, version) for a in pool.actors]
            sent_stats, *recv_stats = ray.get([sent, *received])
            assert sent_stats.buckets > 1 and all(r.bytes == sent_stats.bytes for r in recv_stats)
            want_tokens, want_scores = ray.get(sender.outputs.remote())
            for tokens, scores in pool.call_all("outputs"):
                assert tokens == want_tokens
                assert scores[0] == pytest.approx(want_scores[0], abs=1e-4)
            assert pool.call_all("policy_version") == [version, version]
        assert pool.call_all("outputs")[0][0] != before[0][0]
    finally:
        pool.shutdown()
        ray.kill(sender)


@pytest.mark.usefixtures("ray_cluster")
def test_direct_sync_matches_an_engine_loaded_from_disk(tiny_model: Path, tmp_path: Path) -> None:
    """Synced straight into its tensors, an engine serves exactly what an engine built from those weights serves.

    Two bucket sizes: 256 KB splits some fused layers (q/k/v, gate/up) across buckets, so they are
    repacked through a copy; 64 MB keeps every layer back to back in the shared file, read in place.
    """
    sender = ray.remote(num_cpus=0)(Sender).remote(str(tiny_model))
    spec = RoleGroupSpec("rollout", num_workers=1, cpus_per_worker=1, gpus_per_worker=0)
    engine = EngineSpec(model_path=str(tiny_model), backend="vllm", max_model_len=256)
    pool = ActorPool(SyncedRollout, spec, (engine,), engine_env(RoleResources(cpus_per_worker=1)))
    try:
        addr, port = ray.get(sender.address.remote())
        ray.get([sender.join.remote(addr, port, 2), pool.actors[0].join_sync_group.remote(addr, port, 1, 2, "gloo")])
        metas = ray.get(sender.metas.remote())
        for version, bucket in ((1, 256 * 1024), (2, 64 << 20)):
            ray.get(sender.perturb.remote(10 + version))
            folder = tmp_path / f"v{version}"
            ray.get(sender.save.remote(str(folder)))
            sent = sender.send.remote(bucket)
            received = pool.actors[0].receive_weights.remote(metas, bucket, version)
            sent_stats, recv_stats = ray.get([sent, received])
            assert recv_stats.path == "direct" and recv_stats.bytes == sent_stats.bytes
            disk_spec = EngineSpec(model_path=str(folder), backend="vllm", max_model_len=256)
            # A second pool beside the synced one: its own name (placement group names are unique).
            disk_role = RoleGroupSpec("rollout-from-disk", num_workers=1, cpus_per_worker=1, gpus_per_worker=0)
            disk = ActorPool(SyncedRollout, disk_role, (disk_spec,), engine_env(RoleResources(cpus_per_worker=1)))
            try:
                want, got = disk.call_all("outputs")[0], pool.call_all("outputs")[0]
                want_lps, got_lps = disk.call_all("greedy_logprobs")[0], pool.call_all("greedy_logprobs")[0]
            finally:
                disk.shutdown()
            assert got[0] == want[0]  # greedy tokens
            assert got[1][0] == pytest.approx(want[1][0], abs=1e-5)  # option scores
            for a, b in zip(got_lps, want_lps, strict=True):
                assert a == pytest.approx(b, abs=1e-5)
    finally:
        pool.shutdown()
        ray.kill(sender)
