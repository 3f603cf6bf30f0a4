"""Critic-free RL: seconds and samples/s per PPO iteration for each advantage estimator, at equal samples.

The same rl_cai stage (`bench.ppo.run_rlaif`: the benchmark model as policy and KL reference,
the seeded scalar-head reward model, every core's threads for each role as they take turns)
runs once per estimator and repeat, the estimators interleaved (gae, grpo, rloo, gae, ...)
so that drift in the machine's speed falls on all of them alike:

- same prompts in the same order (the stage's seeded red-team schedule), `est_prompts` prompts x
  `est_samples` responses each per iteration, <= `ppo_new_tokens` new tokens, one epoch of
  two optimizer steps (mini-batch = half the samples), micro-batch 4, fp32;
- ``gae``: PPO with its critic (values at rollout time, a value loss in the update);
- ``grpo``, ``rloo``: no critic is created (`ppo.advantage`).

Reported per estimator: the median over repeats of each run's median steady iteration (after
`est_warmup` warm-up iterations), its min and max over repeats, samples/s, the phase split
(generation, scoring, learner forward, training, sync, other) and the speed-up over gae.
Whole-process wall time (start-up included) is reported beside it.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from bench.common import Settings, Skipped, bench_cache, log, median, require, resolve_bench_model
from bench.ppo import PHASES, build_reward_model, run_rlaif, summarise, with_cpu_shares

ESTIMATORS = ("gae", "grpo", "rloo")


def run(s: Settings) -> dict[str, Any]:
    require("ray", "vllm", "deepspeed", "hydra")
    if s.device != "cpu":
        raise Skipped("set up for CPU (Ray, vLLM and DeepSpeed are not on the GPU node)")
    policy = resolve_bench_model(s.model)
    work = bench_cache() / "estimators"
    work.mkdir(parents=True, exist_ok=True)
    rm = build_reward_model(policy, bench_cache() / "ppo" / f"rm-{policy.name}")
    samples = s.est_prompts * s.est_samples
    load_before = list(os.getloadavg())
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in ESTIMATORS}
    for repeat in range(s.repeats):
        for estimator in ESTIMATORS:
            log(f"estimators: {estimator}, repeat {repeat + 1}/{s.repeats}")
            settings = {
                "ppo.advantage": estimator,
                "ppo.iterations": s.est_iterations,
                "ppo.prompts_per_iteration": s.est_prompts,
                "ppo.samples_per_prompt": s.est_samples,
                "ppo.mini_batch_size": samples // 2,
                "ppo.micro_batch_size": min(4, samples // 2),
            }
            side = summarise(with_cpu_shares(functools.partial(run_rlaif, s, policy, rm, work, settings)), s.est_warmup)
            runs[estimator].append(side)
            if "error" in side:
                return {"error": f"{estimator}: {side['error']}", "log_tail": side.get("log_tail")}
    result: dict[str, Any] = {
        "setup": f"model {s.model}, {s.est_iterations} iterations ({s.est_warmup} warm-up) of {s.est_prompts} "
        f"prompts x {s.est_samples} samples = {samples}, ≤ {s.ppo_new_tokens} new tokens, 1 epoch of 2 optimizer "
        f"steps, micro-batch {min(4, samples // 2)}, fp32; {s.repeats} repeats, estimators interleaved",
        "samples_per_iteration": samples,
        "load_average_before": load_before,
        "warmup_iterations": s.est_warmup,
        "estimators": {},
    }
    for estimator, sides in runs.items():
        per_run = [side["iteration_s"] for side in sides]
        iteration_s = median(per_run)
        result["estimators"][estimator] = {
            "iteration_s": iteration_s,
            "iteration_s_min": min(per_run),
            "iteration_s_max": max(per_run),
            "iteration_s_runs": per_run,
            "samples_per_s": samples / iteration_s,
            "split_s": {p: median([side["split_s"][p] for side in sides]) for p in (*PHASES, "other")},
            "startup_s": median([side["startup_s"] for side in sides]),
            "process_wall_s": median([side["process_wall_s"] for side in sides]),
            "runs": sides,
        }
    gae = result["estimators"]["gae"]["iteration_s"]
    result["speedup_over_gae"] = {e: gae / r["iteration_s"] for e, r in result["estimators"].items()}
    return result
