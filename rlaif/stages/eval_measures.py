"""The measuring steps shared by the evaluate stage and `python -m rlaif.evaluate`.

Each step starts a pool of actors for its role (rollout workers, judges, reward
scorers) with the resources in ``cluster.*``, does its one job and shuts the pool
down: answering prompts, asking the feedback model whether answers decline
(``eval.refusal_judge``), and scoring answers with a reward model. The summaries of
what comes back are pure (`rlaif.stages.eval_summary`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.judge import ConstitutionalJudge
from rlaif.actors.pool import ActorPool, engine_env
from rlaif.actors.reward_scorer import RewardScorer
from rlaif.actors.rollout import RolloutWorker
from rlaif.config import RoleResources, RunConfig, engine_spec
from rlaif.core.judging import MultipleChoiceItem, MultipleChoiceScore, render_lettered
from rlaif.core.refusal import refusal_question
from rlaif.core.rewards import RewardSample
from rlaif.engines.base import Generation, Message, SamplingParams
from rlaif.engines.models import resolve_model
from rlaif.stages.eval_summary import Prompts, Responses, refusal_item_id
from rlaif.stages.ppo_roles import RewardModelScorer

log = logging.getLogger(__name__)

# Texts per reward-model forward pass.
_SCORE_BATCH = 8


def role_spec(name: str, r: RoleResources, run: RunConfig) -> RoleGroupSpec:
    """The placement of one role's pool, from its ``cluster.<role>`` resources."""
    return RoleGroupSpec(name, r.num_workers, r.cpus_per_worker, r.gpus_per_worker, run.cluster.placement_strategy)


def judge_model_name(run: RunConfig) -> str:
    """The feedback model of the evaluation: eval.judge_model, else label.judge_model, else model.name."""
    return run.eval.judge_model or run.label.judge_model or run.model.name


def rollout_pool(run: RunConfig, model: Path) -> ActorPool:
    """Rollout workers (``cluster.rollout``) whose engines hold `model`."""
    r = run.cluster.rollout
    return ActorPool(RolloutWorker, role_spec("rollout", r, run), (engine_spec(run, str(model)),), engine_env(r))


def answer(pool: ActorPool, run: RunConfig, prompts: Prompts) -> list[dict[str, Any]]:
    """One answer per prompt from the pool's current weights: ``{"id", "response", "tokens"}`` rows in order."""
    # No per-request seed when sampling (temperature > 0): vLLM would give every prompt the same
    # random stream. The engine's own generator is seeded with run.seed.
    params = SamplingParams(temperature=run.eval.temperature, max_new_tokens=run.eval.max_new_tokens)
    chats = [[Message("user", p.prompt)] for _, p in prompts]
    gens: list[Generation] = pool.map_shards("generate", chats, params)
    return [
        {"id": p.id, "response": g.completions[0].text.strip(), "tokens": len(g.completions[0].token_ids)}
        for (_, p), g in zip(prompts, gens, strict=True)
    ]


def generate_each(run: RunConfig, models: Mapping[str, Path], prompts: Prompts) -> dict[str, dict[str, Any]]:
    """model -> prompt id -> answer row, with a fresh pool per model (models may differ in architecture)."""
    responses: dict[str, dict[str, Any]] = {}
    for name, folder in models.items():
        pool = rollout_pool(run, folder)
        try:
            responses[name] = {row["id"]: row for row in answer(pool, run, prompts)}
        finally:
            pool.shutdown()
        log.info("evaluate: %s answered %d prompts", name, len(prompts))
    return responses


def refusal_items(models: Sequence[str], prompts: Prompts, responses: Responses) -> list[MultipleChoiceItem]:
    """The judge's yes/no question "does this answer decline?" for every model's answer to every prompt."""
    items = []
    for m in models:
        for _, p in prompts:
            question, options = refusal_question(p.prompt, responses[m][p.id]["response"])
            text, letters = render_lettered(question, options)
            items.append(MultipleChoiceItem(refusal_item_id(m, p.id), text, letters))
    return items


def judge_refusals(run: RunConfig, items: Sequence[MultipleChoiceItem]) -> dict[str, float]:
    """Item id -> the feedback model's P(yes, it declines), from a pool of judges (``cluster.judge``)."""
    if not items:
        return {}
    r, judge_model = run.cluster.judge, resolve_model(judge_model_name(run))
    args = (engine_spec(run, str(judge_model)), ())
    pool = ActorPool(ConstitutionalJudge, role_spec("judge", r, run), args, engine_env(r))
    try:
        scores: list[MultipleChoiceScore] = pool.map_shards("score_items", list(items))
    finally:
        pool.shutdown()
    log.info("evaluate: asked %s whether %d answers decline", judge_model, len(scores))
    return {s.id: s.probs[0] for s in scores}


def score_responses(
    run: RunConfig, reward_model: Path, models: Sequence[str], prompts: Prompts, responses: Responses
) -> dict[str, list[float]]:
    """model -> the reward model's score of each answer, in prompt order (``cluster.reward_scorer``)."""
    r = run.cluster.reward_scorer
    args = (
        str(reward_model),
        run.engine.device,
        run.engine.dtype,
        _SCORE_BATCH,
        run.reward_model.max_len,
        run.model.trust_remote_code,
    )
    scorer = RewardModelScorer(ActorPool(RewardScorer, role_spec("reward_scorer", r, run), args, engine_env(r)))
    try:
        return {
            m: scorer.score([RewardSample(p.prompt, responses[m][p.id]["response"], ()) for _, p in prompts])
            for m in models
        }
    finally:
        scorer.shutdown()
