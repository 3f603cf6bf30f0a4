"""PPO: seconds per iteration (rollout, scoring, update) of rlaif's rl_cai stage against TRL's PPO trainer.

Same policy (the benchmark model; also the KL reference), same reward model (a scalar-head
model built once from the policy, its head drawn with a fixed seed; it also starts the value
model on both sides), same batch (prompts per iteration, one sample each), response length,
one PPO epoch, mini-batch = batch, micro-batch = min(4, batch), fp32:

- ``rlaif``: ``python -m rlaif.run stages=[rl_cai]`` in its own process, with its Ray roles
  (learner: one DeepSpeed rank, whose ZeRO-2 config runs as stage 0 with CPU Adam on one rank;
  one vLLM rollout actor; one reward-scorer actor). The roles take turns, so each is given every
  core's threads (``cluster.*.threads_per_worker``, ``cluster.learner.cpus_per_worker``); the
  split is read from ``rl_cai/metrics.jsonl`` (generation, scoring, learner_forward, training, sync);
- ``trl``: `trl.experimental.ppo.PPOTrainer` (trl 1.12.0, bench/.venv-trl), one process; the
  split is measured by `bench/trl_baseline.py` (generation, scoring, learner_forward, training).

Reported: the median of each phase and of the iteration over the steady iterations, and
the ratio. The first ``ppo_warmup`` iterations of each side are reported apart, as start-up
(Ray, engines, DeepSpeed) is: both processes are still faulting in their memory then (their
first optimizer states, activations and, for rlaif, the heap its trainer keeps; rlaif's
learner took two iterations to settle here, TRL one). The median over every iteration and its
ratio are reported too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Settings,
    Skipped,
    bench_cache,
    cpu_shares,
    cpu_ticks,
    log,
    median,
    require,
    resolve_bench_model,
)
from bench.reward import run_trl

PHASES = ("generation", "scoring", "learner_forward", "training", "sync")


def build_reward_model(policy: Path, dest: Path) -> Path:
    """A scalar-head model from the policy, head ~ N(0, 0.02) with a fixed seed (rewards that vary)."""
    if (dest / "config.json").is_file():
        return dest
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.02)
    from bench.tiny import save_model_folder

    return save_model_folder(model, tokenizer, dest)


def run_rlaif(
    s: Settings, policy: Path, rm: Path, work: Path, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One ``python -m rlaif.run stages=[rl_cai]`` process; `settings` replace or add overrides (key -> value)."""
    run_dir = work / "rlaif-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "reward_model").mkdir(parents=True)
    os.symlink(rm, run_dir / "reward_model" / "model")
    cores = os.cpu_count() or 1
    chosen: dict[str, Any] = {
        "stages": "[rl_cai]",
        "run_dir": run_dir,
        "model.name": policy,
        "ppo.policy": policy,
        "ppo.iterations": s.ppo_iterations,
        "ppo.prompts_per_iteration": s.ppo_batch,
        "ppo.max_new_tokens": s.ppo_new_tokens,
        "ppo.mini_batch_size": s.ppo_batch,
        "ppo.micro_batch_size": min(4, s.ppo_batch),
        "ppo.ppo_epochs": 1,
        "ppo.checkpoint_every": 0,
        "engine.max_model_len": 512,
        "logging.wandb_mode": "disabled",
        "cluster.include_dashboard": "false",
        # The roles take turns: Ray's logical CPUs may exceed the cores, and each role uses every core.
        "cluster.num_cpus": 2 * cores,
        "cluster.learner.cpus_per_worker": cores,
        "cluster.rollout.threads_per_worker": cores,
        "cluster.reward_scorer.threads_per_worker": cores,
        **(settings or {}),
    }
    overrides = [f"{k}={v}" for k, v in chosen.items()]
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "rlaif.run", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    wall = time.perf_counter() - started
    metrics = run_dir / "rl_cai" / "metrics.jsonl"
    if proc.returncode != 0 or not metrics.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        print("\n".join(tail))
        return {"error": f"rlaif.run exited {proc.returncode}", "log_tail": tail}
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    iters = [{p: r[f"time_{p}_s"] for p in PHASES} for r in rows]
    for it in iters:
        it["total"] = sum(it.values())
    manifest = json.loads((run_dir / "rl_cai" / "MANIFEST.json").read_text())
    return {
        "iterations": iters,
        "samples_per_iteration": rows[0]["samples"],
        "startup_s": manifest.get("summary", {}).get("startup_s"),
        "process_wall_s": wall,
        "response_tokens_mean": median([r["response_length"] for r in rows]),
        "overrides": overrides,
    }


def with_cpu_shares(run_side: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one side and add the machine's busy and stolen CPU shares over its whole run."""
    before = cpu_ticks()
    side = run_side()
    shares = cpu_shares(before, cpu_ticks())
    return {**side, "cpu_shares": shares} if shares else side


def summarise(side: dict[str, Any], warmup: int) -> dict[str, Any]:
    """Medians over the iterations after the first `warmup` (all of them when there are no more)."""
    if "iterations" not in side:
        return side
    iters = side["iterations"]
    n_warm = warmup if len(iters) > warmup else 0
    steady = iters[n_warm:]
    split = {p: median([it.get(p, 0.0) for it in steady]) for p in PHASES}
    total = median([it["total"] for it in steady])
    split["other"] = max(0.0, total - sum(split.values()))
    return {
        **side,
        "split_s": split,
        "iteration_s": total,
        "steady_iterations": len(steady),
        "warmup_iteration_s": [it["total"] for it in iters[:n_warm]],
        "iteration_s_all": median([it["total"] for it in iters]),
    }


def run(s: Settings) -> dict[str, Any]:
    require("ray", "vllm", "deepspeed", "hydra")
    if s.device != "cpu":
        raise Skipped("the PPO benchmark is set up for CPU here (Ray, vLLM, DeepSpeed and TRL are not on the GPU node)")
    policy = resolve_bench_model(s.model)
    work = bench_cache() / "ppo"
    work.mkdir(exist_ok=True)
    rm = build_reward_model(policy, work / f"rm-{policy.name}")
    from rlaif.core.prompts import load_prompts

    data = work / "prompts.jsonl"
    prompts = load_prompts("builtin:red_team")
    data.write_text("".join(json.dumps({"prompt": p.prompt}) + "\n" for p in prompts[: s.ppo_batch * s.ppo_iterations]))
    log("ppo: rlaif rl_cai stage")
    result: dict[str, Any] = {
        "setup": f"model {s.model}, {s.ppo_iterations} iterations ({s.ppo_warmup} warm-up) of {s.ppo_batch} "
        f"prompts x 1 sample, ≤ {s.ppo_new_tokens} new tokens, 1 PPO epoch, micro-batch {min(4, s.ppo_batch)}, fp32",
        "warmup_iterations": s.ppo_warmup,
        "rlaif": summarise(with_cpu_shares(lambda: run_rlaif(s, policy, rm, work)), s.ppo_warmup),
    }
    log("ppo: TRL PPOTrainer")
    cfg = {
        "model": str(policy),
        "reward_model": str(rm),
        "data": str(data),
        "batch": s.ppo_batch,
        "micro_batch": min(4, s.ppo_batch),
        "iterations": s.ppo_iterations,
        "new_tokens": s.ppo_new_tokens,
        "device": s.device,
        "out_dir": str(work / "trl-out"),
    }
    result["trl"] = summarise(with_cpu_shares(lambda: run_trl("ppo", cfg, work / "trl.json")), s.ppo_warmup)
    a, b = result["rlaif"].get("iteration_s"), result["trl"].get("iteration_s")
    if a and b:
        result["ratio_trl_over_rlaif_seconds"] = b / a
        every = result["trl"]["iteration_s_all"] / result["rlaif"]["iteration_s_all"]
        result["ratio_trl_over_rlaif_seconds_all"] = every
    return result
