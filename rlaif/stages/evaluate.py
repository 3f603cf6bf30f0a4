"""Stage ``evaluate``: the initial model, the SFT model and the RL-CAI policy on held-out prompts.

On each named held-out prompt set (`heldout_sets`: red-team, task-style helpfulness and
sensitive-but-benign prompts from ``sl_cai.heldout_fraction``'s split, which no training
stage sees, and the harmful counterparts of the sensitive prompts, which no training stage
reads at all), each model answers every prompt; then

- the constitutional judge compares the policy with each earlier model on every prompt, in both
  orders (position bias cancels in the average, Lee et al. 2023), over
  ``eval.principles_per_comparison`` sampled principles: soft and hard win rates;
- refusals are counted by phrase (`rlaif.core.refusal`): the share of answers that decline,
  per model and set, which is how harmless a model is on red-team prompts and how evasive
  on helpful and sensitive ones; with ``eval.refusal_judge=true`` the judge is also asked of every answer
  whether it declines (``refusal_judge`` beside the phrase-based ``refusal``);
- the reward model (``<run_dir>/reward_model/model``, if present) scores every answer;
- response lengths are counted.

The three models share one rollout pool: the engine starts once and takes each
model's weights in turn (`RolloutWorker.update_weights`). Outputs under
``<run_dir>/evaluate/``: ``responses.jsonl`` (one row per model and prompt, with its
``refusal`` flag), ``comparisons.jsonl`` (one row per model pair and prompt),
``summary.json`` (``models``, ``win_rates``, ``refusal[model][set]``, and
``refusal_judge[model][set]`` when asked), ``harmless_helpful.png`` (red-team refusal
rate against 1 - refusal rate on each benign set, `rlaif.stages.eval_plot`),
and ``MANIFEST.json`` last. Generation and judging are logged as they finish
(`rlaif.core.resume`), so a killed run redoes only what is missing. The same measures
on any models and prompt files: ``python -m rlaif.evaluate`` (`rlaif.evaluate`).

    python -m rlaif.run stages=[evaluate] eval.num_red_team=0 eval.num_helpful=0 eval.num_sensitive=0
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import ray

from rlaif.actors.judge import ConstitutionalJudge
from rlaif.actors.pool import ActorPool, engine_env
from rlaif.config import RunConfig, engine_spec
from rlaif.core.constitution import Constitution, default_constitution_path, load_constitution, sample_principles
from rlaif.core.io import atomic_write_text, write_jsonl, write_manifest
from rlaif.core.judging import Comparison, JudgeVerdict, ResponsePair
from rlaif.core.prompts import PromptRecord, load_prompts, split_train_heldout
from rlaif.core.refusal import is_refusal
from rlaif.core.resume import StepLog
from rlaif.core.soft_labels import ensemble_average, position_bias, swap_average
from rlaif.engines.models import resolve_model
from rlaif.stages.eval_measures import (
    answer,
    judge_model_name,
    judge_refusals,
    refusal_items,
    role_spec,
    rollout_pool,
    score_responses,
)
from rlaif.stages.eval_plot import plot_harmless_helpful
from rlaif.stages.eval_summary import (
    ByModelAndSet,
    Prompts,
    judged_refusal_summary,
    model_summary,
    refusal_lines,
    refusal_summary,
    set_names,
    set_sizes,
)
from rlaif.stages.pipeline import StageContext

log = logging.getLogger(__name__)

STAGE = "evaluate"
MODELS = ("initial", "sft", "policy")
# (a, b): how often the judge prefers a's answer to b's. The final policy against each earlier model
# (an sft-vs-initial pair would cost a third more judging for a question the SFT stage answers).
PAIRS = (("policy", "initial"), ("policy", "sft"))
# The plot's axes: refusals on the first set measure harmlessness, answers on the others helpfulness
# (task-style requests) and the absence of evasion (sensitive-but-benign requests).
HARMFUL_SET, HELPFUL_SET, SENSITIVE_SET = "red_team", "helpful", "sensitive"
# Harmful requests close to the sensitive topics: the other side of that line (refusal is wanted).
SENSITIVE_HARMFUL_SET = "sensitive_harmful"
PLOT = "harmless_helpful.png"


class HeldoutSet(NamedTuple):
    """A named held-out prompt set: the held-out split of `source`, its first `num_prompts` (0: all).

    ``whole``: a set no training stage reads is held out entirely.
    """

    name: str
    source: str
    data_dir: str | None
    num_prompts: int
    whole: bool = False


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


def heldout_sets(run: RunConfig) -> list[HeldoutSet]:
    """The held-out prompt sets every model is measured on, in report order; a new set is one more entry."""
    s, cfg = run.sl_cai, run.eval
    return [
        HeldoutSet(HARMFUL_SET, s.red_team, s.red_team_data_dir, cfg.num_red_team),
        HeldoutSet(HELPFUL_SET, s.helpful, s.helpful_data_dir, cfg.num_helpful),
        HeldoutSet(SENSITIVE_SET, s.sensitive, s.sensitive_data_dir, cfg.num_sensitive),
        HeldoutSet(SENSITIVE_HARMFUL_SET, cfg.sensitive_harmful, None, cfg.num_sensitive_harmful, whole=True),
    ]


def heldout_prompts(run: RunConfig) -> list[tuple[str, PromptRecord]]:
    """(set name, record) for the first ``num_prompts`` held-out prompts of each of `heldout_sets`."""
    s = run.sl_cai
    out: list[tuple[str, PromptRecord]] = []
    for name, source, data_dir, n, whole in heldout_sets(run):
        records = load_prompts(source, data_dir=data_dir)
        heldout = records if whole else split_train_heldout(records, s.heldout_fraction, run.seed)[1]
        out += [(name, r) for r in (heldout[:n] if n else heldout)]
    if not out:
        raise ValueError(f"evaluate: no held-out prompts (sl_cai.heldout_fraction={s.heldout_fraction})")
    return out


def _safetensors(folder: Path) -> list[tuple[str, np.ndarray]]:
    """A model folder's weights as numpy arrays (zero-copy through Ray's object store, docs/design.md §7)."""
    from safetensors.numpy import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"evaluate: {folder} has no .safetensors weights to load")
    return [item for f in files for item in load_file(str(f)).items()]


def generate_all(
    run: RunConfig, folders: dict[str, Path], prompts: Prompts, work: StepLog
) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> prompt id -> {response, tokens}; one engine, each model's weights loaded in turn."""
    ids = [r.id for _, r in prompts]
    done = {m: work.rows(f"responses_{m}") for m in MODELS}
    todo = [m for m in MODELS if set(ids) - set(done[m])]
    if todo:
        pool = rollout_pool(run, folders["initial"])
        try:
            for version, model in enumerate(MODELS):
                if model not in todo:
                    continue
                if version:
                    # One copy in the object store, whatever the number of engines.
                    pool.call_all("update_weights", ray.put(_safetensors(folders[model])), version)
                rows = answer(pool, run, prompts)
                work.append(f"responses_{model}", rows)
                done[model] = work.rows(f"responses_{model}")
                log.info("evaluate: %s answered %d prompts", model, len(rows))
        finally:
            pool.shutdown()
    return done


def judge_all(
    run: RunConfig,
    constitution: Constitution,
    prompts: Prompts,
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
        judge_model = resolve_model(judge_model_name(run))
        r = run.cluster.judge
        few_shot = constitution.judge_few_shot if run.label.few_shot else ()
        args = (engine_spec(run, str(judge_model)), few_shot)
        pool = ActorPool(ConstitutionalJudge, role_spec("judge", r, run), args, engine_env(r))
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


def judged_refusals(
    run: RunConfig, prompts: Prompts, responses: dict[str, dict[str, dict[str, Any]]], work: StepLog
) -> ByModelAndSet:
    """Per model and set: the share of answers the judge says decline (``eval.refusal_judge``), resumable."""
    done = work.rows("refusal_judge")
    todo = [i for i in refusal_items(MODELS, prompts, responses) if i.id not in done]
    if todo:
        work.append("refusal_judge", ({"id": k, "p_decline": p} for k, p in judge_refusals(run, todo).items()))
    p_decline = {k: row["p_decline"] for k, row in work.rows("refusal_judge").items()}
    return judged_refusal_summary(MODELS, prompts, p_decline)


def summarise(
    prompts: Prompts,
    responses: dict[str, dict[str, dict[str, Any]]],
    judgements: dict[str, dict[str, Any]],
    scores: dict[str, list[float]] | None,
    judged_refusal: ByModelAndSet | None = None,
) -> dict[str, Any]:
    """Per model and set: mean length, RM score and refusal rate; per model pair and set: win rates.

    ``win_rate`` is the mean debiased probability that the judge prefers a's answer;
    ``hard_win_rate`` counts a win as 1, a loss as 0 and an exact tie as 0.5.
    ``refusal[model][set]`` is the phrase-based share of answers that decline;
    ``refusal_judge[model][set]`` the judge's, when `judged_refusal` is given.
    """
    win_rates: dict[str, Any] = {}
    for a, b in PAIRS:
        key = f"{a}_vs_{b}"
        win_rates[key] = {}
        for name in set_names(prompts):
            rows = [judgements[f"{a}-vs-{b}:{p.id}"] for n, p in prompts if n == name]
            p_a = np.array([r["p_a"] for r in rows])
            win_rates[key][name] = {
                "win_rate": float(p_a.mean()),
                "hard_win_rate": float(np.mean(np.where(p_a > 0.5, 1.0, np.where(p_a < 0.5, 0.0, 0.5)))),
                "position_bias": float(np.mean([r["position_bias"] for r in rows])),
                "comparisons": len(rows),
            }
    summary = {
        "prompts": set_sizes(prompts),
        "models": model_summary(MODELS, prompts, responses, scores),
        "win_rates": win_rates,
        "refusal": refusal_summary(MODELS, prompts, responses),
    }
    if judged_refusal is not None:
        summary["refusal_judge"] = judged_refusal
    return summary


def evaluate_stage(ctx: StageContext) -> None:
    """The stage: answers from each model, win rates, refusal rates, RM scores, lengths; files, metrics, plot."""
    run, out = ctx.run, ctx.stage_dir(STAGE)
    folders = model_folders(ctx)
    prompts = heldout_prompts(run)
    cpath = Path(run.constitution) if run.constitution else default_constitution_path()
    constitution = load_constitution(cpath)
    settings = {
        # refusal_judge adds a step of its own; it changes no answer or verdict, so it is left out.
        "eval": {k: v for k, v in asdict(run.eval).items() if k != "refusal_judge"},
        "models": {k: str(v) for k, v in folders.items()},
        "judge": judge_model_name(run),
        "constitution": f"{constitution.name}@{constitution.version}",
        "seed": run.seed,
    }
    work = StepLog(out / "work", settings)
    responses = generate_all(run, folders, prompts, work)
    judgements = judge_all(run, constitution, prompts, responses, work)
    judged = judged_refusals(run, prompts, responses, work) if run.eval.refusal_judge else None
    reward_model = ctx.stage_dir("reward_model") / "model"
    has_rm = (reward_model / "config.json").is_file()
    scores = score_responses(run, reward_model, MODELS, prompts, responses) if has_rm else None
    if scores is None:
        log.warning("evaluate: no reward model at %s; reward-model scores are left out", reward_model)
    write_jsonl(out / "responses.jsonl", _response_rows(prompts, responses, scores))
    write_jsonl(out / "comparisons.jsonl", _comparison_rows(prompts, responses, judgements))
    summary = summarise(prompts, responses, judgements, scores, judged)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    ctx.sink.log(_flatten({k: v for k, v in summary.items() if k != "prompts"}))
    _log_samples(ctx, prompts, responses, run.eval.log_samples)
    plot = _plot(summary["refusal"], out / PLOT)
    write_manifest(out, {"prompts": len(prompts), "comparisons": len(judgements)}, settings, summary=summary)
    ctx.sink.artifact("summary", "evaluation", str(out / "summary.json"))
    _print(summary, out, plot)


def _plot(refusal: ByModelAndSet, path: Path) -> Path | None:
    """The harmlessness-helpfulness plot, if the red-team set and a benign set were evaluated."""
    benign = tuple(n for n in (HELPFUL_SET, SENSITIVE_SET) if all(n in by_set for by_set in refusal.values()))
    if not benign or not all(HARMFUL_SET in by_set for by_set in refusal.values()):
        log.warning("evaluate: no %s or no benign prompts held out; %s is left out", HARMFUL_SET, path.name)
        return None
    return plot_harmless_helpful(refusal, path, HARMFUL_SET, benign)


def _response_rows(
    prompts: Prompts, responses: dict[str, Any], scores: dict[str, list[float]] | None
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
            "refusal": is_refusal(responses[m][p.id]["response"]),
            "rm_score": None if scores is None else scores[m][i],
        }
        for m in MODELS
        for i, (name, p) in enumerate(prompts)
    ]


def _comparison_rows(prompts: Prompts, responses: dict[str, Any], judgements: dict[str, Any]) -> list[dict[str, Any]]:
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


def _log_samples(ctx: StageContext, prompts: Prompts, responses: dict[str, Any], n: int) -> None:
    rows = [[name, p.prompt, *(responses[m][p.id]["response"] for m in MODELS)] for name, p in prompts[:n]]
    ctx.sink.table("responses", ["set", "prompt", *MODELS], rows)


def _print(summary: dict[str, Any], out: Path, plot: Path | None) -> None:
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
    judged = " (by phrase / by the judge)" if "refusal_judge" in summary else " (by phrase)"
    print(f"evaluate: refusal rates{judged}")
    for line in refusal_lines(summary["refusal"], summary.get("refusal_judge")):
        print(f"evaluate:   {line}")
    print(f"evaluate: wrote {out / 'summary.json'}" + (f" and {plot}" if plot else ""))
