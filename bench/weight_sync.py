"""Weight-sync time against bytes moved: PPO learner rank 0 -> 1..N vLLM rollout engines.

    python bench/weight_sync.py                          # embedded model, 1 then 2 engines
    python bench/weight_sync.py --engines 1 2 4 --bucket-mb 16 64 256

Starts a local Ray cluster, one real `PPOTrainer` rank (ZeRO-2 on CPU) and, for each
engine count, a pool of `RolloutWorker` actors joined to it by `PolicySync`; each push
is timed from the first receive call to the last engine's load (gather, the shared-memory
or gloo transfer, and each engine's load: ``direct`` into its own tensors with CPU
re-packing, or vLLM's ``reload``; docs/design.md §5). The first push of each pool is
reported apart (``first_push_seconds``): it faults in the shared file's pages and builds
the engines' load plans, once per run. Prints one JSON object. Run it on an idle
machine: shared cores make every number noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import ray

from rlaif.actors.cluster import RoleGroupSpec, start_local
from rlaif.actors.policy_sync import PolicySync, SyncReport
from rlaif.actors.pool import ActorPool, engine_env
from rlaif.actors.rollout import RolloutWorker
from rlaif.actors.trainer_group import TrainerGroup
from rlaif.engines.base import EngineSpec
from rlaif.engines.models import EMBEDDED_MODEL, resolve_model
from rlaif.trainers.ds_config import build_ds_config
from rlaif.trainers.ppo import PPOTrainer


def measure(model: str, engines: list[int], bucket_mb: list[int], repeats: int) -> list[dict]:
    """One learner rank, then for each engine count a rollout pool joined to it; `repeats` pushes per bucket size.

    Expects a running Ray cluster with at least max(engines) + 1 CPUs.
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    config = build_ds_config(2, 1, 1, 1, 1e-6, 0.0, 1.0, False, True, 0)
    learner_args = {
        "policy_path": model,
        "reference_path": model,
        "critic_path": model,
        "actor_ds_config": config,
        "critic_ds_config": config,
        "temperature": 1.0,
    }
    learner = TrainerGroup(PPOTrainer, RoleGroupSpec("learner", 1, 1, 0), learner_args)
    results = []
    try:
        for n in engines:
            spec = EngineSpec(model_path=model, max_model_len=512, kv_cache_gib=1)
            pool = ActorPool(RolloutWorker, RoleGroupSpec("rollout", n, 1, 0), (spec,), engine_env(1))
            try:
                sync = PolicySync(learner, pool, "gloo", bucket_mb[0] << 20)
                first = sync.push(1)
                version = 1
                for mb in bucket_mb:
                    sync.bucket_bytes = mb << 20
                    reports = [sync.push(version + k) for k in range(1, repeats + 1)]
                    version += repeats
                    results.append(_row(n, mb, first, reports))
            finally:
                pool.shutdown()
    finally:
        learner.shutdown()
    return results


def _row(engines: int, bucket_mb: int, first: SyncReport, reports: list[SyncReport]) -> dict:
    seconds = [r.seconds for r in reports]
    mid = statistics.median(seconds)
    return {
        "engines": engines,
        "bucket_mb": bucket_mb,
        "buckets": reports[0].buckets,
        "bytes_per_engine": reports[0].bytes,
        "mb_per_engine": reports[0].bytes / 1e6,
        "seconds_median": mid,
        "seconds": seconds,
        "send_seconds_median": statistics.median(r.send_seconds for r in reports),
        # Bytes each engine took per second of a sync, and over all engines.
        "gb_per_s_per_engine": reports[0].bytes / 1e9 / mid,
        "gb_per_s_all_engines": engines * reports[0].bytes / 1e9 / mid,
        # How each engine loaded the weights ("direct" or "reload"), over all timed pushes.
        "load_paths": sorted({p for r in reports for p in r.load_paths}),
        "first_push_seconds": first.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--engines", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--bucket-mb", type=int, nargs="+", default=[64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = str(resolve_model(args.model))
    start_local(num_cpus=max(args.engines) + 1, include_dashboard=False, log_to_driver=False)
    try:
        results = measure(model, args.engines, args.bucket_mb, args.repeats)
    finally:
        ray.shutdown()
    print(json.dumps({"model": args.model, "load_avg_1m": os.getloadavg()[0], "results": results}, indent=2))


if __name__ == "__main__":
    main()
