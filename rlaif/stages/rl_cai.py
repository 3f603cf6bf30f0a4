"""Stage ``rl_cai``: PPO against the constitutional reward model (Bai et al. 2022 §4.1; docs/design.md §1, stage 2).

Every iteration is one pass of the algorithm (`ppo_iteration`):

1. take a batch of training prompts (red-team, plus shares of helpfulness and sensitive prompts;
   or ``ppo.prompt_file``'s next rows, in file order: `rlaif.stages.ppo_prompts`);
2. the rollout engines sample responses with their sampling log-probs; each sample records
   its policy version and whether it finished (an end of sequence before ``ppo.max_new_tokens``);
3. the reward scorers score them (the reward model, or a registered rule reward); a response
   that ran out of tokens is scored as unfinished and pays ``ppo.missing_eos_penalty``;
4. the learner group computes reference log-probs, values and the policy's log-probs (or takes
   the engines' sampling log-probs for those, `ppo.old_logprobs`: float32 runs by default);
5. per-token KL-penalised rewards (or the KL as a loss term, ``ppo.kl_in``) and advantages:
   GAE with the critic's values, or a critic-free estimator (``ppo.advantage``: GRPO, RLOO,
   REINFORCE++), whitened where the estimator asks (`rlaif.core.experience`);
6. PPO epochs on the learner group, several optimizer steps per batch (``ppo.mini_batch_size``),
   each token's loss optionally weighted by truncated importance sampling (``ppo.tis_cap``);
7. weight sync, learner rank 0 -> every rollout engine;
8. metrics (reward, KL, entropy, losses, the engine-vs-learner log-prob mismatch, the share of
   unfinished responses, time split, and ``time_wall_s``: the wall clock from the previous
   iteration's row to this one's, everything included) to the sink and ``metrics.jsonl``.

Outputs under ``<run_dir>/rl_cai/``: ``policy/`` (Hugging Face folder), ``metrics.jsonl``
(one row per iteration), ``samples.jsonl`` (every sampled response with its score and
policy version), and ``MANIFEST.json`` last. A checkpoint every ``ppo.checkpoint_every``
iterations (``checkpoint/``, removed when the stage finishes) lets a killed run continue.

    python -m rlaif.run stages=[rl_cai] ppo.iterations=20 ppo.adaptive_kl=true
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm import tqdm

from rlaif.config import RunConfig
from rlaif.core.advantages import AdaptiveKLController, FixedKLController, KLController, KLKind
from rlaif.core.experience import collate_rollouts, experience_stats, make_experience
from rlaif.core.io import append_jsonl, read_jsonl, write_manifest
from rlaif.core.losses import logprob_mismatch, truncated_is_weights
from rlaif.core.rewards import RewardSample, apply_missing_eos_penalty
from rlaif.stages.pipeline import StageContext
from rlaif.stages.ppo_prompts import train_prompts
from rlaif.stages.ppo_roles import PPORoles, model_paths
from rlaif.stages.ppo_rollouts import Rollouts, Sample
from rlaif.stages.ppo_state import Checkpoint, fingerprint, keep_iterations_before

log = logging.getLogger(__name__)

STAGE = "rl_cai"
TIME_KEYS = ("generation", "scoring", "learner_forward", "training", "sync")


@dataclass
class Timer:
    """Seconds spent per phase of an iteration."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class IterationResult:
    """One iteration's metrics row and its samples' rows (both JSON-ready)."""

    metrics: dict[str, Any]
    samples: list[dict[str, Any]]


def kl_controller(run: RunConfig, kl_coef: float) -> KLController:
    cfg = run.ppo
    if cfg.adaptive_kl:
        return AdaptiveKLController(kl_coef, cfg.kl_target, cfg.kl_horizon)
    return FixedKLController(kl_coef)


def ppo_iteration(
    roles: PPORoles, rollouts: Rollouts, iteration: int, kl: KLController, run: RunConfig
) -> IterationResult:
    """One PPO iteration: sample (or take the batch sampled ahead), score, evaluate, advantages, update, sync.

    The learner holds policy version `iteration` (the updates made so far) and makes version
    `iteration + 1`. ``time_generation_s`` is the wait for the batch: all of its sampling in the
    synchronous loop, only what training did not hide with ``ppo.max_staleness`` >= 1.
    """
    cfg, timer = run.ppo, Timer()
    with timer("generation"):
        taken = rollouts.take(iteration, learner_version=iteration)
    samples = taken.samples
    roles.engines_sleep()
    finished = [s.completion.finished for s in samples]
    with timer("scoring"):
        scores = roles.scorer.score(
            [
                RewardSample(s.record.prompt, s.completion.text, s.completion.token_ids, s.completion.finished)
                for s in samples
            ]
        )
        scores = apply_missing_eos_penalty(scores, finished, cfg.missing_eos_penalty)
    with timer("learner_forward"):
        # Any pad id will do: padding is masked everywhere.
        rollout = collate_rollouts(
            [s.generation.prompt_token_ids for s in samples], [s.completion.token_ids for s in samples], 0
        )
        behaviour = engine_logprobs(samples, rollout.response_ids.shape[1])
        outputs = roles.policy_outputs(rollout, behaviour if roles.engine_logprobs else None)
        versions = torch.tensor([s.generation.policy_version for s in samples])
        # With the learner's own old log-probs, the batch's samples of the learner's own version measure
        # the mismatch here, at the sampling weights (older samples differ by the updates too); otherwise
        # the learner measures it before its first optimizer step.
        fresh = versions == iteration
        rollout_mismatch = (
            None
            if roles.engine_logprobs
            else logprob_mismatch(outputs.logprobs[fresh], behaviour[fresh], rollout.response_mask[fresh])
        )
        # The behaviour weights the update applies (the decoupled objective's, with max_staleness >= 1).
        weights = behaviour_weights(outputs.logprobs, behaviour, rollout.response_mask, cfg.tis_cap or 0.0)
        kl_kind: KLKind = cfg.kl_estimator  # type: ignore[assignment]
        experience, seq_kl = make_experience(
            rollout,
            outputs,
            torch.tensor(scores),
            versions,
            kl.value,
            kl_kind,
            cfg.gamma,
            cfg.lam,
            cfg.whiten_advantages,
            behaviour_logprobs=behaviour,
            estimator=cfg.advantage,
            group_size=cfg.samples_per_prompt,
            grpo_std_norm=cfg.grpo_std_norm,
            kl_in_reward=cfg.kl_in == "reward",
        )
    with timer("training"):
        train = roles.train(experience, cfg, kl.value)
    stats, kl_coef = experience_stats(experience, seq_kl), kl.value
    kl.update(stats.kl_mean, len(samples))
    roles.engines_wake()
    with timer("sync"):
        sync = roles.sync.push(iteration + 1)
    mismatch = train.mismatch if rollout_mismatch is None else rollout_mismatch
    # None: no sample of the learner's own version in the batch (every one was sampled ahead).
    mismatch_abs, mismatch_kl = mismatch.means() if mismatch.tokens else (None, None)
    metrics = {
        "id": f"iteration-{iteration}",
        "iteration": iteration,
        "policy_version": sync.version,
        "samples": len(samples),
        "sample_policy_version": min(s.generation.policy_version for s in samples),
        "reward_mean": stats.score_mean,
        "reward_std": stats.score_std,
        "kl_mean": stats.kl_mean,
        "kl_coef": kl_coef,
        "response_length": stats.response_length_mean,
        "value_mean": stats.value_mean,
        "return_mean": stats.return_mean,
        "unfinished_fraction": 1.0 - sum(finished) / len(samples),
        **{k: v for k, v in train._asdict().items() if k not in ("seconds", "mismatch")},
        "tis_weight_max": weights.max,
        # Asynchronous rollout: how far behind the learner the trained samples were, index = versions behind.
        "staleness_hist": taken.staleness,
        "staleness_max": len(taken.staleness) - 1,
        "staleness_mean": sum(k * n for k, n in enumerate(taken.staleness)) / len(samples),
        "dropped_samples": taken.dropped,
        "regenerated_samples": taken.regenerated,
        # The engines' sampling log-probs against the learner's, same tokens, same weights.
        "logprob_mismatch_abs": mismatch_abs,
        "logprob_mismatch_kl": mismatch_kl,
        "sync_bytes": sync.bytes,
        "sync_buckets": sync.buckets,
        "sync_send_s": sync.send_seconds,
        # How the engines loaded the weights: "direct" into their own tensors, or vLLM's "reload" (docs/design.md §5).
        "sync_load_path": ",".join(sorted(set(sync.load_paths))),
        # Rollout actors that died and were restarted this iteration (while sampling, or before the sync).
        "actor_restarts": taken.restarts + sync.restarts,
        **{f"time_{k}_s": timer.seconds[k] for k in TIME_KEYS},
    }
    return IterationResult(metrics, sample_rows(samples, scores, iteration, cfg.samples_per_prompt))


class BehaviourWeights(NamedTuple):
    """The truncated importance weights min(π_old / π_behaviour, cap) over a batch's real tokens."""

    mean: float
    max: float
    clipped_fraction: float


def behaviour_weights(old: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor, cap: float) -> BehaviourWeights:
    """Summary of the weights the update applies (all 1, none clipped, with cap 0: off)."""
    if not cap:
        return BehaviourWeights(1.0, 1.0, 0.0)
    tis = truncated_is_weights(old, behaviour, cap)
    keep = mask.bool()
    return BehaviourWeights(
        float(tis.weights[keep].mean()), float(tis.weights[keep].max()), float(tis.clipped[keep].float().mean())
    )


def engine_logprobs(samples: list[Sample], width: int) -> torch.Tensor:
    """(len(samples), width) the engines' log-probs of each response's tokens, 0 after its end."""
    out = torch.zeros((len(samples), width), dtype=torch.float32)
    for row, s in enumerate(samples):
        lps = s.completion.logprobs
        if len(lps) != len(s.completion.token_ids):
            raise RuntimeError(
                f"rl_cai: the engine returned {len(lps)} log-probs for {len(s.completion.token_ids)} tokens "
                f"(prompt {s.record.id!r})"
            )
        out[row, : len(lps)] = torch.tensor(lps, dtype=torch.float32)
    return out


def sample_rows(samples: list[Sample], scores: list[float], iteration: int, per_prompt: int) -> list[dict[str, Any]]:
    """samples.jsonl rows: each response, its score (penalty included), whether it finished, its policy version."""
    return [
        {
            "id": f"{iteration}:{s.record.id}:{k % per_prompt}",
            "iteration": iteration,
            "prompt_id": s.record.id,
            "prompt": s.record.prompt,
            "response": s.completion.text,
            "tokens": len(s.completion.token_ids),
            # False: cut off at ppo.max_new_tokens without an end of sequence.
            "finished": s.completion.finished,
            "score": score,
            "policy_version": s.generation.policy_version,
        }
        for k, (s, score) in enumerate(zip(samples, scores, strict=True))
    ]


def rl_cai_stage(ctx: StageContext) -> None:
    """The stage: PPO iterations with checkpoints, then the policy folder, metrics and manifest."""
    run, cfg, out = ctx.run, ctx.run.ppo, ctx.stage_dir(STAGE)
    paths = model_paths(run, ctx.run_dir, ctx.base_model)
    prompts = train_prompts(run)
    checkpoint = Checkpoint(out / "checkpoint", fingerprint(run, paths))
    state = checkpoint.load()
    start = state.iteration if state else 0
    kl = kl_controller(run, state.kl_coef if state else cfg.kl_coef)
    for name in ("metrics.jsonl", "samples.jsonl"):
        # Rows after the checkpoint came from the killed run; this run redoes those iterations.
        keep_iterations_before(out / name, start)
    started = time.perf_counter()
    roles = PPORoles(run, paths)
    startup_s = time.perf_counter() - started
    try:
        if state:
            roles.learner.run_all("load_checkpoint", str(checkpoint.path(state)))
            roles.sync.push(start)
            log.info("rl_cai: resumed at iteration %d from %s", start, checkpoint.path(state))
        bar = tqdm(range(start, cfg.iterations), desc="ppo", unit="iter", initial=start, total=cfg.iterations)
        rollouts = Rollouts(roles, cfg, prompts, cfg.iterations)
        # time_wall_s: from the previous row's stamp (for the first iteration, this loop's start, also
        # after a resume) to this row's, so it counts everything the driver does, phases or not.
        stamp = time.perf_counter()
        for it in bar:
            result = ppo_iteration(roles, rollouts, it, kl, run)
            bar.set_postfix(reward=f"{float(result.metrics.get('reward_mean', 0.0)):.3f}")
            append_jsonl(out / "samples.jsonl", result.samples)
            now = time.perf_counter()
            result = replace(result, metrics={**result.metrics, "time_wall_s": now - stamp})
            stamp = now
            append_jsonl(out / "metrics.jsonl", [result.metrics])
            _log(ctx, result, cfg.log_samples)
            if cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0 and it + 1 < cfg.iterations:
                checkpoint.save(roles.learner, it + 1, kl.value)
        roles.learner.run_all("save", str(out / "policy"))
    finally:
        roles.shutdown()
    rows = list(read_jsonl(out / "metrics.jsonl"))
    summary = _summary(rows, startup_s)
    write_manifest(
        out,
        {"iterations": len(rows), "samples": sum(r["samples"] for r in rows)},
        checkpoint.fingerprint | {"placement": cfg.placement},
        summary=summary,
        policy=str(out / "policy"),
    )
    checkpoint.remove()
    ctx.sink.artifact("policy", "model", str(out / "policy"))
    ctx.sink.artifact("samples", "dataset", str(out / "samples.jsonl"))
    _print_summary(rows, summary, out)


def _log(ctx: StageContext, result: IterationResult, n_samples: int) -> None:
    m = result.metrics
    ctx.sink.log({k: float(v) for k, v in m.items() if isinstance(v, (int, float))}, step=int(m["iteration"]))
    if n_samples:
        cols = ["iteration", "prompt", "response", "score", "policy_version"]
        ctx.sink.table("samples", cols, [[s[c] for c in cols] for s in result.samples[:n_samples]])


def _summary(rows: list[dict[str, Any]], startup_s: float) -> dict[str, Any]:
    """Totals and first/last values for the manifest: the time split, the wall clock and how the reward moved."""
    n = max(len(rows), 1)
    totals = {f"{k}_s": sum(r[f"time_{k}_s"] for r in rows) for k in (*TIME_KEYS, "wall")}
    return {
        "time_total_s": totals,
        "time_per_iteration_s": {k: v / n for k, v in totals.items()},
        "time_wall_median_s": statistics.median(r["time_wall_s"] for r in rows) if rows else None,
        "startup_s": startup_s,
        "reward_first": rows[0]["reward_mean"] if rows else None,
        "reward_last": rows[-1]["reward_mean"] if rows else None,
        "kl_last": rows[-1]["kl_mean"] if rows else None,
        "sync_bytes": rows[-1]["sync_bytes"] if rows else 0,
        "sync_seconds_mean": totals["sync_s"] / n,
        "actor_restarts": sum(r.get("actor_restarts", 0) for r in rows),
        # Asynchronous rollout (ppo.max_staleness): the stalest trained sample, and batches thrown away.
        "staleness_max": max((r.get("staleness_max", 0) for r in rows), default=0),
        "dropped_samples": sum(r.get("dropped_samples", 0) for r in rows),
        "regenerated_samples": sum(r.get("regenerated_samples", 0) for r in rows),
    }


def _print_summary(rows: list[dict[str, Any]], summary: dict[str, Any], out: Path) -> None:
    print("\nrl_cai: iteration  reward   kl      entropy  gen_s  score_s  train_s  sync_s  wall_s")
    for r in rows:
        train_s = r["time_learner_forward_s"] + r["time_training_s"]
        print(
            f"rl_cai: {r['iteration']:9d}  {r['reward_mean']:+.3f}  {r['kl_mean']:+.3f}  {r['entropy']:.3f}    "
            f"{r['time_generation_s']:5.1f}  {r['time_scoring_s']:7.1f}  {train_s:7.1f}  {r['time_sync_s']:6.1f}"
            f"  {r['time_wall_s']:6.1f}"
        )
    if summary["staleness_max"] or summary["dropped_samples"] or summary["regenerated_samples"]:
        print(
            f"rl_cai: asynchronous: samples at most {summary['staleness_max']} version(s) old; "
            f"{summary['dropped_samples']} dropped as too old, {summary['regenerated_samples']} sampled again"
        )
    mb = summary["sync_bytes"] / 1e6
    print(f"rl_cai: sync {mb:.0f} MB per engine in {summary['sync_seconds_mean']:.2f} s; policy in {out / 'policy'}")
