"""GRPO: seconds per iteration of rlaif's rl_cai stage (``ppo.advantage=grpo``) against TRL's `GRPOTrainer`.

Both sides read one prompt file, written once here (distinct red-team prompts), in file
order: iteration k trains on rows [k·B, (k+1)·B), B = ``grpo_prompts``, each prompt with a
group of G = ``grpo_samples`` responses of ≤ ``ppo_new_tokens`` new tokens sampled at
temperature 1 and scored by the same scalar-head reward model (`bench.ppo.build_reward_model`);
the benchmark model is the policy and the KL reference; fp32; every core's threads:

- ``rlaif``: ``python -m rlaif.run stages=[rl_cai]`` (`bench.ppo.run_rlaif`: one vLLM rollout
  actor, one reward-scorer actor, one DeepSpeed learner rank) with ``ppo.advantage=grpo`` and
  ``ppo.prompt_file``; synchronous (``ppo.max_staleness=0``), as TRL is;
- ``trl``: `trl.GRPOTrainer` (trl 1.16.0 in bench/.venv-trl-grpo, `bench/trl_grpo_baseline.py`),
  sampling with transformers' ``generate`` (``use_vllm=False``: TRL's vLLM mode is not used on CPU).

The same algorithm on both sides, setting by setting (`rlaif_overrides`, `trl_config`):

- one optimizer step per iteration: rlaif's mini-batch is all B·G samples, one epoch; TRL
  accumulates B·G / micro-batch micro-steps, one generation batch of B·G completions per step,
  ``num_iterations=1``; micro-batch gcd(4, B·G) on both;
- the KL to the reference as a loss term, k3 per token, β = `KL_COEF` (rlaif ``ppo.kl_in=loss``,
  ``ppo.kl_estimator=k3``; TRL ``beta``, ``use_bias_correction_kl=False``). Not β = 0: rlaif's
  learner runs the reference pass whatever β is (it logs the KL), while TRL at β = 0 loads no
  reference at all, so β = 0 would spare TRL a forward pass per sample that rlaif makes;
- loss aggregation: each micro-batch's mean over its real tokens, over the accumulation steps
  (rlaif ``ppo.loss_agg=token_mean``, TRL ``loss_type="bnpo"``; TRL's default ``"dapo"`` divides
  by the whole step's token count instead); docs/design.md §8;
- advantages: a score minus its group's mean, over the group's Bessel-corrected std (rlaif
  ``ppo.grpo_std_norm=true``, TRL ``scale_rewards="group"``); no penalty for a missing end of
  sequence (rlaif ``ppo.missing_eos_penalty=0``: TRL has none);
- no pass for the old log-probs: TRL needs none with one step per generation, rlaif takes the
  engine's sampling log-probs (``ppo.old_logprobs=engine``, fp32); clip 0.2, lr 1e-6, grad clip 1.

Timing: wall clock per iteration, from the end of one iteration to the end of the next with
everything in between (rlaif's ``time_wall_s`` in metrics.jsonl; TRL's ``on_step_end``
callbacks). Beside it the phase split: rlaif's phase timers, TRL's wrapped methods. The first
``grpo_warmup`` iterations of each side are reported apart, as start-up is. Each side's
prompt order is read back (rlaif's samples.jsonl, TRL's generation calls) and checked
against the file's.

Each side runs ``repeats`` times, alternating which goes first (run r: rlaif first when r is
even). Reported per run: each side's median steady iteration, samples/s and TRL / rlaif; then
the min, median and max of that ratio over the runs. The headline is the median, against the
goal of rlaif ≥ `GOAL` × TRL.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

from bench.common import (
    ROOT,
    TRL_GRPO_PYTHON,
    Settings,
    Skipped,
    bench_cache,
    log,
    median,
    require,
    resolve_bench_model,
    run_baseline,
)
from bench.ppo import PHASES, build_reward_model, run_rlaif, summarise, with_cpu_shares

# β of the KL loss term on both sides: the GRPO paper's (Shao et al. 2024, DeepSeekMath §4.1).
KL_COEF = 0.04
# The goal: TRL's seconds per iteration over rlaif's, median over runs.
GOAL = 2.0


class Shape(NamedTuple):
    """One iteration's work, the same on both sides."""

    prompts: int
    samples: int
    micro_batch: int
    iterations: int
    new_tokens: int

    @classmethod
    def of(cls, s: Settings) -> Shape:
        n = s.grpo_prompts * s.grpo_samples
        return cls(s.grpo_prompts, s.grpo_samples, math.gcd(4, n), s.grpo_iterations, s.ppo_new_tokens)

    @property
    def batch(self) -> int:
        return self.prompts * self.samples


def rlaif_overrides(shape: Shape, prompt_file: Path) -> dict[str, Any]:
    """rl_cai's settings for the GRPO run (on top of `run_rlaif`'s), each matched to `trl_config`'s."""
    return {
        "ppo.advantage": "grpo",
        "ppo.prompt_file": prompt_file,
        "ppo.iterations": shape.iterations,
        "ppo.prompts_per_iteration": shape.prompts,
        "ppo.samples_per_prompt": shape.samples,
        "ppo.max_new_tokens": shape.new_tokens,
        "ppo.mini_batch_size": shape.batch,
        "ppo.micro_batch_size": shape.micro_batch,
        "ppo.ppo_epochs": 1,
        "ppo.max_staleness": 0,
        "ppo.kl_in": "loss",
        "ppo.kl_estimator": "k3",
        "ppo.kl_coef": KL_COEF,
        "ppo.adaptive_kl": "false",
        "ppo.loss_agg": "token_mean",
        "ppo.grpo_std_norm": "true",
        "ppo.missing_eos_penalty": 0.0,
        "ppo.old_logprobs": "engine",
        "ppo.temperature": 1.0,
        "ppo.clip_eps": 0.2,
        "ppo.actor_lr": 1e-6,
        "ppo.grad_clip": 1.0,
        "ppo.entropy_coef": 0.0,
    }


def trl_config(shape: Shape, policy: Path, rm: Path, data: Path, work: Path, device: str) -> dict[str, Any]:
    """bench/trl_grpo_baseline.py's config; the settings it fixes itself are in its docstring."""
    return {
        "model": str(policy),
        "reward_model": str(rm),
        "data": str(data),
        "prompts": shape.prompts,
        "generations": shape.samples,
        "micro_batch": shape.micro_batch,
        "iterations": shape.iterations,
        "new_tokens": shape.new_tokens,
        "beta": KL_COEF,
        "loss_type": "bnpo",
        "scale_rewards": "group",
        "threads": os.cpu_count() or 1,
        "device": device,
        "out_dir": str(work / "trl-out"),
    }


def write_prompts(path: Path, count: int) -> list[str]:
    """The first `count` distinct red-team prompts, one JSON object a line; both sides read this file."""
    from rlaif.core.prompts import load_prompts

    prompts = list(dict.fromkeys(p.prompt for p in load_prompts("builtin:red_team")))[:count]
    if len(prompts) < count:
        raise ValueError(f"grpo needs {count} distinct prompts, builtin:red_team has {len(prompts)}")
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return prompts


def expected_rows(shape: Shape) -> list[list[int]]:
    """The file rows each iteration should train on: iteration k, rows [k·B, (k+1)·B)."""
    return [list(range(k * shape.prompts, (k + 1) * shape.prompts)) for k in range(shape.iterations)]


def run_rlaif_side(
    s: Settings, shape: Shape, policy: Path, rm: Path, work: Path, data: Path, prompts: list[str]
) -> dict[str, Any]:
    """One rl_cai run on `data` (holding `prompts`); iteration totals are ``time_wall_s``, prompts read back."""
    side = run_rlaif(s, policy, rm, work, rlaif_overrides(shape, data))
    if "iterations" not in side:
        return side
    run_dir = next(Path(o.split("=", 1)[1]) for o in side["overrides"] if o.startswith("run_dir="))
    out = run_dir / "rl_cai"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    for it, row in zip(side["iterations"], rows, strict=True):
        it["phase_sum"], it["total"] = it["total"], row["time_wall_s"]
    row_of = {p: i for i, p in enumerate(prompts)}
    seen: list[list[int]] = [[] for _ in rows]
    for line in (out / "samples.jsonl").read_text().splitlines():
        if line.strip():
            sample = json.loads(line)
            k, row = sample["iteration"] - rows[0]["iteration"], row_of.get(sample["prompt"], -1)
            if not seen[k] or seen[k][-1] != row:
                seen[k].append(row)
    return {**side, "prompt_rows": seen}


def run_trl_side(cfg: dict[str, Any], out: Path, timeout: int = 1500) -> dict[str, Any]:
    """bench/trl_grpo_baseline.py in bench/.venv-trl-grpo, its own process; its JSON result."""
    script = str(ROOT / "bench" / "trl_grpo_baseline.py")
    return run_baseline(TRL_GRPO_PYTHON, [script, json.dumps(cfg), str(out)], out, "trl grpo", timeout)


def one_run(r: int, sides: dict[str, Any], shape: Shape, warmup: int) -> dict[str, Any]:
    """Run `r` of the comparison: both sides, rlaif first when `r` is even."""
    order = ("rlaif", "trl") if r % 2 == 0 else ("trl", "rlaif")
    result: dict[str, Any] = {"first": order[0]}
    for name in order:
        log(f"grpo: run {r + 1}, {name}")
        side = summarise(with_cpu_shares(sides[name]), warmup)
        if "error" in side:
            return {"error": f"run {r + 1}, {name}: {side['error']}", "log_tail": side.get("log_tail")}
        side["samples_per_s"] = shape.batch / side["iteration_s"]
        side["prompt_order_ok"] = side.pop("prompt_rows", None) == expected_rows(shape)
        result[name] = side
    result["ratio_trl_over_rlaif"] = result["trl"]["iteration_s"] / result["rlaif"]["iteration_s"]
    return result


def over_runs(runs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One side's medians over the runs: iteration seconds, samples/s, the split, response length."""
    sides = [run[name] for run in runs]
    return {
        "iteration_s": median([x["iteration_s"] for x in sides]),
        "iteration_s_runs": [x["iteration_s"] for x in sides],
        "samples_per_s": median([x["samples_per_s"] for x in sides]),
        "split_s": {p: median([x["split_s"][p] for x in sides]) for p in (*PHASES, "other")},
        "warmup_iteration_s": [x["warmup_iteration_s"] for x in sides],
        "response_tokens_mean": median([x.get("response_tokens_mean") or 0.0 for x in sides]),
        "prompt_order_ok": all(x["prompt_order_ok"] for x in sides),
    }


def run(s: Settings) -> dict[str, Any]:
    require("ray", "vllm", "deepspeed", "hydra")
    if s.device != "cpu":
        raise Skipped("set up for CPU (Ray, vLLM, DeepSpeed and TRL are not on the GPU node)")
    if not TRL_GRPO_PYTHON.exists():
        raise Skipped("the TRL GRPO venv bench/.venv-trl-grpo is missing: run bash bench/setup.sh")
    shape = Shape.of(s)
    policy = resolve_bench_model(s.model)
    work = bench_cache() / "grpo"
    work.mkdir(parents=True, exist_ok=True)
    rm = build_reward_model(policy, bench_cache() / "ppo" / f"rm-{policy.name}")
    data = work / "prompts.jsonl"
    prompts = write_prompts(data, shape.prompts * shape.iterations)
    cfg = trl_config(shape, policy, rm, data, work, s.device)
    sides = {
        "rlaif": functools.partial(run_rlaif_side, s, shape, policy, rm, work, data, prompts),
        "trl": functools.partial(run_trl_side, cfg, work / "trl.json"),
    }
    load_before = list(os.getloadavg())
    runs = []
    for r in range(s.repeats):
        result = one_run(r, sides, shape, s.grpo_warmup)
        if "error" in result:
            return result
        runs.append(result)
    ratios = [run["ratio_trl_over_rlaif"] for run in runs]
    trl_run = runs[0]["trl"]
    return {
        "setup": f"model {s.model}, {shape.iterations} iterations ({s.grpo_warmup} warm-up) of {shape.prompts} "
        f"prompts x {shape.samples} samples = {shape.batch}, ≤ {shape.new_tokens} new tokens, temperature 1, "
        f"one optimizer step per iteration (micro-batch {shape.micro_batch}), KL loss k3 β={KL_COEF} with a "
        "reference model, token-mean loss (rlaif token_mean, TRL bnpo), group std scaling, fp32, "
        f"{cfg['threads']} threads; {s.repeats} runs, alternating which side goes first",
        "trl_version": trl_run.get("trl_version"),
        "generation_backend": {"rlaif": "vLLM (rollout actor)", "trl": trl_run.get("generation_backend")},
        "trl_effective": trl_run.get("effective"),
        "rlaif_overrides": {k: str(v) for k, v in rlaif_overrides(shape, data).items()},
        "trl_config": cfg,
        "samples_per_iteration": shape.batch,
        "warmup_iterations": s.grpo_warmup,
        "load_average_before": load_before,
        "runs": runs,
        "rlaif": over_runs(runs, "rlaif"),
        "trl": over_runs(runs, "trl"),
        "ratio_min": min(ratios),
        "ratio_median": median(ratios),
        "ratio_max": max(ratios),
        "goal": GOAL,
        "goal_met": median(ratios) >= GOAL,
    }
