"""Critic-free RL and asynchronous rollout: seconds and samples/s per PPO iteration, at equal samples.

The same rl_cai stage (`bench.ppo.run_rlaif`: the benchmark model as policy and KL reference,
the seeded scalar-head reward model) runs once per configuration and repeat, the
configurations interleaved (gae sync, gae async, grpo sync, ...) so that drift in the
machine's speed falls on all of them alike:

- same prompts in the same order (the stage's seeded red-team schedule), `est_prompts` prompts x
  `est_samples` responses each per iteration, <= `ppo_new_tokens` new tokens, one epoch of
  two optimizer steps (mini-batch = half the samples), micro-batch 4, fp32;
- ``gae``: PPO with its critic (values at rollout time, a value loss in the update);
  ``grpo``, ``rloo``: no critic is created (`ppo.advantage`);
- ``sync`` (``ppo.max_staleness=0``): the roles take turns, so each is given every core's
  threads; ``async`` (``ppo.max_staleness=1``): the rollout engine samples the next batch
  while the learner trains, so the two run at once and each is given half the cores' threads
  (more would spin-wait, docs/design.md §9).

Reported per configuration: the median over repeats of each run's median steady iteration
(after `est_warmup` warm-up iterations), its min and max over repeats, samples/s, the phase
split as the driver sees it (generation is the wait for a batch: all of sampling when
synchronous, what training did not hide when asynchronous), and the speed-ups over gae
(same sync/async mode) and over sync (same estimator). Whole-process wall time (start-up
included) is reported beside it.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from bench.common import Settings, Skipped, bench_cache, log, median, require, resolve_bench_model
from bench.ppo import PHASES, build_reward_model, run_rlaif, summarise, with_cpu_shares

ESTIMATORS = ("gae", "grpo", "rloo")
MODES = {"sync": 0, "async": 1}  # ppo.max_staleness


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
    cores = os.cpu_count() or 1
    configs = [(e, m) for e in ESTIMATORS for m in MODES]
    runs: dict[str, list[dict[str, Any]]] = {f"{e} {m}": [] for e, m in configs}
    for repeat in range(s.repeats):
        for estimator, mode in configs:
            name = f"{estimator} {mode}"
            log(f"estimators: {name}, repeat {repeat + 1}/{s.repeats}")
            threads = cores if mode == "sync" else max(1, cores // 2)
            settings = {
                "ppo.advantage": estimator,
                "ppo.max_staleness": MODES[mode],
                "ppo.iterations": s.est_iterations,
                "ppo.prompts_per_iteration": s.est_prompts,
                "ppo.samples_per_prompt": s.est_samples,
                "ppo.mini_batch_size": samples // 2,
                "ppo.micro_batch_size": min(4, samples // 2),
                "cluster.learner.cpus_per_worker": threads,
                "cluster.rollout.threads_per_worker": threads,
                "cluster.reward_scorer.threads_per_worker": threads,
            }
            side = summarise(with_cpu_shares(functools.partial(run_rlaif, s, policy, rm, work, settings)), s.est_warmup)
            runs[name].append(side)
            if "iteration_s" in side:  # in the log too, so a benchmark stopped by its time limit leaves its figures
                log(f"estimators: {name}: {side['iteration_s']:.2f} s/iteration, split {side['split_s']}")
            if "error" in side:
                return {"error": f"{name}: {side['error']}", "log_tail": side.get("log_tail")}
    result: dict[str, Any] = {
        "setup": f"model {s.model}, {s.est_iterations} iterations ({s.est_warmup} warm-up) of {s.est_prompts} "
        f"prompts x {s.est_samples} samples = {samples}, ≤ {s.ppo_new_tokens} new tokens, 1 epoch of 2 optimizer "
        f"steps, micro-batch {min(4, samples // 2)}, fp32; {s.repeats} repeats, configurations interleaved; "
        f"threads per role: sync {cores}, async {max(1, cores // 2)} ({cores} cores)",
        "samples_per_iteration": samples,
        "load_average_before": load_before,
        "warmup_iterations": s.est_warmup,
        "configurations": {},
    }
    for name, sides in runs.items():
        per_run = [side["iteration_s"] for side in sides]
        iteration_s = median(per_run)
        result["configurations"][name] = {
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
    conf = result["configurations"]
    # > 1: faster than the reference (seconds per iteration at equal samples).
    result["speedup_over_gae"] = {
        n: conf[f"gae {n.split()[1]}"]["iteration_s"] / r["iteration_s"] for n, r in conf.items()
    }
    result["speedup_over_sync"] = {
        n: conf[f"{n.split()[0]} sync"]["iteration_s"] / r["iteration_s"] for n, r in conf.items()
    }
    return result
