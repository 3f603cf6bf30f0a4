"""The generation smoke test: the policy answers a handful of shipped prompts through Ray rollout actors."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.pool import ActorPool, engine_env, split_evenly
from rlaif.actors.rollout import RolloutWorker
from rlaif.config import RunConfig, engine_spec
from rlaif.core.io import write_jsonl, write_manifest
from rlaif.core.prompts import load_prompts
from rlaif.engines.base import Generation, Message, SamplingParams, ThroughputStats
from rlaif.stages.pipeline import StageContext

log = logging.getLogger(__name__)

# The console shows each answer on one line of at most this many characters; answers.jsonl has them whole.
ANSWER_PREVIEW_CHARS = 160


@dataclass(frozen=True)
class SmokeResult:
    prompts: list[str]
    generations: list[Generation]
    wall_seconds: float
    engine_stats: list[ThroughputStats]

    @property
    def generated_tokens(self) -> int:
        return sum(len(c.token_ids) for g in self.generations for c in g.completions)


def smoke_stage(ctx: StageContext) -> None:
    """The stage: generate, then print a one-line preview of each answer and tokens/s."""
    out = ctx.stage_dir("smoke")
    result = generation_smoke(ctx.run, ctx.base_model, out)
    for prompt, gen in zip(result.prompts, result.generations, strict=True):
        print(f"\n>>> {prompt}\n{preview(gen.completions[0].text)}")
    engine_tps = sum(s.generated_tokens_per_s for s in result.engine_stats)
    print(
        f"\n{len(result.prompts)} answers from {len(result.engine_stats)} rollout actor(s), "
        f"{result.generated_tokens} tokens in {result.wall_seconds:.1f} s: "
        f"{result.generated_tokens / result.wall_seconds:.1f} tokens/s end to end "
        f"({engine_tps:.1f} tokens/s inside the engines); whole answers in {out / 'answers.jsonl'}"
    )


def preview(text: str, width: int = ANSWER_PREVIEW_CHARS) -> str:
    """`text` on one line (whitespace runs become one space), cut to `width` characters with an ellipsis."""
    flat = " ".join(text.split())
    if not flat:
        return "(empty answer)"
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


def generation_smoke(run: RunConfig, model_path: Path, out: Path) -> SmokeResult:
    """Answer `run.smoke.num_prompts` shipped prompts with the rollout pool; write them to the run folder."""
    records = load_prompts(run.smoke.prompts)[: run.smoke.num_prompts]
    roles = run.cluster.rollout
    spec = RoleGroupSpec(
        "rollout", roles.num_workers, roles.cpus_per_worker, roles.gpus_per_worker, run.cluster.placement_strategy
    )
    log.info("starting %d rollout actor(s) on %s", roles.num_workers, run.engine.backend)
    pool = ActorPool(RolloutWorker, spec, (engine_spec(run, str(model_path)),), engine_env(roles))
    try:
        params = SamplingParams(
            temperature=run.smoke.temperature,
            top_p=run.smoke.top_p,
            max_new_tokens=run.smoke.max_new_tokens,
            seed=run.seed,
        )
        chats = [[Message("user", r.prompt)] for r in records]
        start = time.perf_counter()
        generations: list[Generation] = pool.map_shards("generate", chats, params)
        wall = time.perf_counter() - start
        stats: list[ThroughputStats] = pool.call_all("stats")
        # Where each actor ran (node id, IP, pid), and which actor answered each prompt (its shard).
        actors = pool.locations()
        owner = [i for i, shard in enumerate(split_evenly(chats, len(pool))) for _ in shard]
    finally:
        pool.shutdown()
    write_jsonl(
        out / "answers.jsonl",
        (
            {
                "id": r.id,
                "prompt": r.prompt,
                "answer": g.completions[0].text,
                "policy_version": g.policy_version,
                "actor": owner[k],
                "node_id": actors[owner[k]]["node_id"],
            }
            for k, (r, g) in enumerate(zip(records, generations, strict=True))
        ),
    )
    result = SmokeResult([r.prompt for r in records], generations, wall, stats)
    write_manifest(
        out,
        {"answers": len(records)},
        {"model": run.model.name, "backend": run.engine.backend, "seed": run.seed},
        tokens_per_s=result.generated_tokens / wall,
        actors=actors,
        nodes=[{"node_id": n["NodeID"], "node_ip": n["NodeManagerAddress"]} for n in ray.nodes() if n["Alive"]],
    )
    return result
