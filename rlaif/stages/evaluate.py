"""Stage ``evaluate``: the initial model, the SFT model and the RL-CAI policy on held-out prompts.

On the held-out red-team and helpfulness prompts (``sl_cai.heldout_fraction``'s split,
which no training stage sees), each model answers every prompt; then

- the constitutional judge compares the policy with each earlier model on every prompt, in both
  orders (position bias cancels in the average, Lee et al. 2023), over
  ``eval.principles_per_comparison`` sampled principles: soft and hard win rates;
- the reward model (``<run_dir>/reward_model/model``, if present) scores every answer;
- response lengths are counted.

The three models share one rollout pool: the engine starts once and takes each
model's weights in turn (`RolloutWorker.update_weights`). Outputs under
``<run_dir>/evaluate/``: ``responses.jsonl`` (one row per model and prompt),
``comparisons.jsonl`` (one row per model pair and prompt), ``summary.json``, and
``MANIFEST.json`` last. Generation and judging are logged as they finish
(`rlaif.core.resume`), so a killed run redoes only what is missing.

    python -m rlaif.run stages=[evaluate] eval.num_red_team=0 eval.num_helpful=0
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import ray

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.judge import ConstitutionalJudge
from rlaif.actors.pool import ActorPool, engine_env
from rlaif.actors.reward_scorer import RewardScorer
from rlaif.actors.rollout import RolloutWorker
from rlaif.config import RoleResources, RunConfig, engine_spec
from rlaif.core.constitution import Constitution, default_constitution_path, load_constitution, sample_principles
from rlaif.core.io import atomic_write_text, write_jsonl, write_manifest
from rlaif.core.judging import Comparison, JudgeVerdict, ResponsePair
from rlaif.core.prompts import PromptRecord, load_prompts, split_train_heldout
from rlaif.core.resume import StepLog
from rlaif.core.rewards import RewardSample
from rlaif.core.soft_labels import ensemble_average, position_bias, swap_average
from rlaif.engines.base import Generation, Message, SamplingParams
from rlaif.engines.models import resolve_model
from rlaif.stages.pipeline import StageContext
from rlaif.stages.ppo_roles import RewardModelScorer

log = logging.getLogger(__name__)

STAGE = "evaluate"
MODELS = ("initial", "sft", "policy")
# (a, b): how often the judge prefers a's answer to b's. The final policy against each earlier model
# (an sft-vs-initial pair would cost a third more judging for a question the SFT stage answers).
PAIRS = (("policy", "initial"), ("policy", "sft"))
# Texts per reward-model forward pass.
_SCORE_BATCH = 8


def model_folders(ctx: StageContext) -> dict[str, Path]:
    """The three models compared; the SFT model and the policy must exist (their stages ran)."""
    folders = {
        "initial": ctx.base_model,
        "sft": ctx.stage_dir("sft") / "model",
        "policy": ctx.stage_dir("rl_cai") / "policy",
    }
    for name, folder in folders.items():
        if not (folder / "config.json").is_file():
            raise ValueError(f"evaluate: no {name} model at {folder} (run the stage that writes it first)")
    return folders


def heldout_prompts(run: RunConfig) -> list[tuple[str, PromptRecord]]:
    """(set name, record) for the first eval.num_* held-out red-team and helpfulness prompts."""
    s, cfg = run.sl_cai, run.eval
    out: list[tuple[str, PromptRecord]] = []
    for name, source, data_dir, n in (
        ("red_team", s.red_team, s.red_team_data_dir, cfg.num_red_team),
        ("helpful", s.helpful, s.helpful_data_dir, cfg.num_helpful),
    ):
        _, heldout = split_train_heldout(load_prompts(source, data_dir=data_dir), s.heldout_fraction, run.seed)
        out += [(name, r) for r in (heldout[:n] if n else heldout)]
    if not out:
        raise ValueError(f"evaluate: no held-out prompts (sl_cai.heldout_fraction={s.heldout_fraction})")
    return out


def _spec(name: str, r: RoleResources, run: RunConfig) -> RoleGroupSpec:
    return RoleGroupSpec(name, r.num_workers, r.cpus_per_worker, r.gpus_per_worker, run.cluster.placement_strategy)


def _safetensors(folder: Path) -> list[tuple[str, np.ndarray]]:
    """A model folder's weights as numpy arrays (zero-copy through Ray's object store, DESIGN §7)."""
    from safetensors.numpy import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"evaluate: {folder} has no .safetensors weights to load")
    return [item for f in files for item in load_file(str(f)).items()]


def generate_all(
    run: RunConfig, folders: dict[str, Path], prompts: Sequence[tuple[str, PromptRecord]], work: StepLog
) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> prompt id -> {response, tokens}; one engine, each model's weights loaded in turn."""
    cfg, ids = run.eval, [r.id for _, r in prompts]
    done = {m: work.rows(f"responses_{m}") for m in MODELS}
    todo = [m for m in MODELS if set(ids) - set(done[m])]
    if todo:
        r = run.cluster.rollout
        pool = ActorPool(
            RolloutWorker,
            _spec("rollout", r, run),
            (engine_spec(run, str(folders["initial"])),),
            engine_env(r.cpus_per_worker),
        )
        try:
            # No per-request seed when sampling (temperature > 0): vLLM would give every prompt the same
            # random stream. The engine's own generator is seeded with run.seed.
            params = SamplingParams(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
            for version, model in enumerate(MODELS):
                if model not in todo:
                    continue
                if version:
                    # One copy in the object store, whatever the number of engines.
                    pool.call_all("update_weights", ray.put(_safetensors(folders[model])), version)
                chats = [[Message("user", p.prompt)] for _, p in prompts]
                gens: list[Generation] = pool.map_shards("generate", chats, params)
                rows = [
                    {"id": i, "response": g.completions[0].text.strip(), "tokens": len(g.completions[0].token_ids)}
                    for i, g in zip(ids, gens, strict=True)
                ]
                work.append(f"responses_{model}", rows)
                done[model] = work.rows(f"responses_{model}")
                log.info("evaluate: %s answered %d prompts", model, len(rows))
        finally:
            pool.shutdown()
    return done


def judge_all(
    run: RunConfig,
    constitution: Constitution,
    prompts: Sequence[tuple[str, PromptRecord]],
    responses: dict[str, dict[str, dict[str, Any]]],
    work: StepLog,
) -> dict[str, dict[str, Any]]:
    """comparison id -> the judge's debiased P(a better) with its per-order probabilities, for every pair."""
    comparisons = []
    for a, b in PAIRS:
        for _, p in prompts:
            pair = ResponsePair(
                f"{a}-vs-{b}:{p.id}", p.id, p.prompt, responses[a][p.id]["response"], responses[b][p.id]["response"], 0
            )
            principles = sample_principles(constitution, run.eval.principles_per_comparison, run.seed, key=pair.id)
            comparisons.append(Comparison(pair, principles))
    done = work.rows("judgements")
    todo = [c for c in comparisons if c.pair.id not in done]
    if todo:
        judge_model = resolve_model(run.eval.judge_model or run.label.judge_model or run.model.name)
        r = run.cluster.judge
        few_shot = constitution.judge_few_shot if run.label.few_shot else ()
        args = (engine_spec(run, str(judge_model)), few_shot)
        pool = ActorPool(ConstitutionalJudge, _spec("judge", r, run), args, engine_env(r.cpus_per_worker))
        try:
            verdicts: list[JudgeVerdict] = pool.map_shards("label", todo, True, False)
        finally:
            pool.shutdown()
        work.append("judgements", (_judgement_row(v) for v in verdicts))
        log.info("evaluate: judged %d comparisons with %s", len(verdicts), judge_model)
    return work.rows("judgements")


def _judgement_row(v: JudgeVerdict) -> dict[str, Any]:
    assert v.p_a_order2 is not None
    per_principle = [swap_average(p1, p2) for p1, p2 in zip(v.p_a_order1, v.p_a_order2, strict=True)]
    bias = [position_bias(p1, p2) for p1, p2 in zip(v.p_a_order1, v.p_a_order2, strict=True)]
    return {
        "id": v.pair_id,
        "p_a": ensemble_average(per_principle),
        "p_a_order1": list(v.p_a_order1),
        "p_a_order2": list(v.p_a_order2),
        "principles": list(v.principle_ids),
        "position_bias": sum(bias) / len(bias),
    }


def score_all(
    run: RunConfig, reward_model: Path, prompts: Sequence[tuple[str, PromptRecord]], responses: dict[str, Any]
) -> dict[str, list[float]]:
    """model -> reward-model score of each answer, in prompt order."""
    r = run.cluster.reward_scorer
    args = (str(reward_model), run.engine.device, run.engine.dtype, _SCORE_BATCH, run.reward_model.max_len)
    scorer = RewardModelScorer(
        ActorPool(RewardScorer, _spec("reward_scorer", r, run), args, engine_env(r.cpus_per_worker))
    )
    try:
        return {
            m: scorer.score([RewardSample(p.prompt, responses[m][p.id]["response"], ()) for _, p in prompts])
            for m in MODELS
        }
    finally:
        scorer.shutdown()


def summarise(
    prompts: Sequence[tuple[str, PromptRecord]],
    responses: dict[str, dict[str, dict[str, Any]]],
    judgements: dict[str, dict[str, Any]],
    scores: dict[str, list[float]] | None,
) -> dict[str, Any]:
    """Per model and prompt set: mean length and RM score; per model pair and set: win rates and position bias.

    ``win_rate`` is the mean debiased probability that the judge prefers a's answer;
    ``hard_win_rate`` counts a win as 1, a loss as 0 and an exact tie as 0.5.
    """
    sets = sorted({name for name, _ in prompts})
    per_model: dict[str, Any] = {}
    for m in MODELS:
        per_model[m] = {}
        for name in sets:
            idx = [i for i, (n, _) in enumerate(prompts) if n == name]
            lengths = [responses[m][prompts[i][1].id]["tokens"] for i in idx]
            entry = {"length_mean": float(np.mean(lengths))}
            if scores is not None:
                entry["rm_score_mean"] = float(np.mean([scores[m][i] for i in idx]))
            per_model[m][name] = entry
    win_rates: dict[str, Any] = {}
    for a, b in PAIRS:
        key = f"{a}_vs_{b}"
        win_rates[key] = {}
        for name in sets:
            rows = [judgements[f"{a}-vs-{b}:{p.id}"] for n, p in prompts if n == name]
            p_a = np.array([r["p_a"] for r in rows])
            win_rates[key][name] = {
                "win_rate": float(p_a.mean()),
                "hard_win_rate": float(np.mean(np.where(p_a > 0.5, 1.0, np.where(p_a < 0.5, 0.0, 0.5)))),
                "position_bias": float(np.mean([r["position_bias"] for r in rows])),
                "comparisons": len(rows),
            }
    return {
        "prompts": {n: sum(1 for m, _ in prompts if m == n) for n in sets},
        "models": per_model,
        "win_rates": win_rates,
    }


def evaluate_stage(ctx: StageContext) -> None:
    """The stage: answers from each model, judge win rates, RM scores, lengths; files, metrics, manifest."""
    run, out = ctx.run, ctx.stage_dir(STAGE)
    folders = model_folders(ctx)
    prompts = heldout_prompts(run)
    cpath = Path(run.constitution) if run.constitution else default_constitution_path()
    constitution = load_constitution(cpath)
    settings = {
        "eval": asdict(run.eval),
        "models": {k: str(v) for k, v in folders.items()},
        "judge": run.eval.judge_model or run.label.judge_model or run.model.name,
        "constitution": f"{constitution.name}@{constitution.version}",
        "seed": run.seed,
    }
    work = StepLog(out / "work", settings)
    responses = generate_all(run, folders, prompts, work)
    judgements = judge_all(run, constitution, prompts, responses, work)
    reward_model = ctx.stage_dir("reward_model") / "model"
    scores = score_all(run, reward_model, prompts, responses) if (reward_model / "config.json").is_file() else None
    if scores is None:
        log.warning("evaluate: no reward model at %s; reward-model scores are left out", reward_model)
    write_jsonl(out / "responses.jsonl", _response_rows(prompts, responses, scores))
    write_jsonl(out / "comparisons.jsonl", _comparison_rows(prompts, responses, judgements))
    summary = summarise(prompts, responses, judgements, scores)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    ctx.sink.log(_flatten(summary["models"]) | _flatten(summary["win_rates"]))
    _log_samples(ctx, prompts, responses, run.eval.log_samples)
    write_manifest(out, {"prompts": len(prompts), "comparisons": len(judgements)}, settings, summary=summary)
    ctx.sink.artifact("summary", "evaluation", str(out / "summary.json"))
    _print(summary, out)


def _response_rows(
    prompts: Sequence[tuple[str, PromptRecord]], responses: dict[str, Any], scores: dict[str, list[float]] | None
) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{m}:{p.id}",
            "model": m,
            "set": name,
            "prompt_id": p.id,
            "prompt": p.prompt,
            "response": responses[m][p.id]["response"],
            "tokens": responses[m][p.id]["tokens"],
            "rm_score": None if scores is None else scores[m][i],
        }
        for m in MODELS
        for i, (name, p) in enumerate(prompts)
    ]


def _comparison_rows(
    prompts: Sequence[tuple[str, PromptRecord]], responses: dict[str, Any], judgements: dict[str, Any]
) -> list[dict[str, Any]]:
    return [
        {"a": a, "b": b, "set": name, "prompt_id": p.id, **judgements[f"{a}-vs-{b}:{p.id}"]}
        for a, b in PAIRS
        for name, p in prompts
    ]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}/")
        else:
            flat[f"{prefix}{key}"] = float(value)
    return flat


def _log_samples(
    ctx: StageContext, prompts: Sequence[tuple[str, PromptRecord]], responses: dict[str, Any], n: int
) -> None:
    rows = [[name, p.prompt, *(responses[m][p.id]["response"] for m in MODELS)] for name, p in prompts[:n]]
    ctx.sink.table("responses", ["set", "prompt", *MODELS], rows)


def _print(summary: dict[str, Any], out: Path) -> None:
    print("\nevaluate: win rates (judge, both orders averaged; soft / hard)")
    for pair, by_set in summary["win_rates"].items():
        cells = ", ".join(f"{n} {v['win_rate']:.2f} / {v['hard_win_rate']:.2f}" for n, v in by_set.items())
        print(f"evaluate:   {pair:18s} {cells}")
    for model, by_set in summary["models"].items():
        cells = ", ".join(
            f"{n}: {v['length_mean']:.0f} tokens" + (f", RM {v['rm_score_mean']:+.3f}" if "rm_score_mean" in v else "")
            for n, v in by_set.items()
        )
        print(f"evaluate:   {model:8s} {cells}")
    print(f"evaluate: wrote {out / 'summary.json'}")
