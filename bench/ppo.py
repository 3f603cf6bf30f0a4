"""PPO: wall seconds per iteration of rlaif's rl_cai stage against TRL's PPO trainer, like for like.

Both sides get the same:

- prompts, in the same order: one prompt file (the first ``ppo_batch x ppo_iterations``
  shipped red-team prompts), iteration k taking rows ``[k*B, (k+1)*B)``: rlaif through
  ``ppo.prompt_file``, TRL through an unshuffled copy of the dataloader its `PPOTrainer`
  builds shuffled (prepared by the trainer's own accelerator);
- policy (the benchmark model; also the KL reference) and reward model (a scalar-head model
  built once from the policy, its head drawn with a fixed seed; it also starts the value
  model), one sample per prompt, ``ppo_new_tokens`` new tokens at most, micro-batch
  min(4, batch), fp32, and every core's threads (rlaif: each role's, as they take turns;
  TRL: ``torch.set_num_threads``);
- PPO update, in two settings, each its own row: the headline is TRL's default, 4 PPO epochs
  of 1 mini-batch (the whole batch), so each batch takes 4 optimizer steps and the ratio and
  clip act; the second is the one-step setting, 1 epoch of 1 mini-batch;
- clock: the wall time from the end of one iteration to the end of the next, everything
  included (rlaif: ``time_wall_s`` of ``rl_cai/metrics.jsonl``; TRL: the time between
  consecutive ``on_step_end`` callbacks, which spans its whole loop, logging included).

The sides:

- ``rlaif``: ``python -m rlaif.run stages=[rl_cai]`` in its own process, with its Ray roles
  (learner: one DeepSpeed rank, whose ZeRO-2 config runs as stage 0 with CPU Adam on one rank;
  one vLLM rollout actor; one reward-scorer actor); the phase split is read from
  ``metrics.jsonl`` (generation, scoring, learner_forward, training, sync; "other" is the
  rest of the wall clock);
- ``trl``: `trl.experimental.ppo.PPOTrainer` (trl 1.12.0, bench/.venv-trl), one process; the
  split is measured by `bench/trl_baseline.py` (generation, scoring, learner_forward; training
  is the rest of the iteration).

Each setting runs each side ``repeats`` times, alternating which goes first (run r: rlaif first
when r is even), the settings interleaved within each repeat so that drift in the machine's
speed falls on both. Reported per run: each side's median wall seconds over its steady
iterations (after the first ``ppo_warmup``, reported apart, as start-up is: both processes are
still faulting in their memory then) and the ratio TRL / rlaif; per setting, the min, median
and max of that ratio over runs, the median being the headline, and the phase split of the
median run. Each run also checks, from rlaif's samples and the queries TRL generated for, that
both sides took the same file rows at every iteration (``same_prompt_rows``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from bench.common import (
    ROOT,
    TRL_PYTHON,
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


class Update(NamedTuple):
    """A PPO update setting: passes over each batch, and mini-batches (optimizer steps) per pass."""

    key: str
    label: str
    epochs: int
    mini_batches: int


# The headline first: TRL's default update (num_ppo_epochs=4, num_mini_batches=1); then one optimizer step.
UPDATES = (
    Update("epochs4", "4 PPO epochs, 1 mini-batch (TRL's default)", 4, 1),
    Update("epochs1", "1 PPO epoch, 1 mini-batch (one optimizer step per batch)", 1, 1),
)


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
    """One ``python -m rlaif.run stages=[rl_cai]`` process; `settings` replace or add overrides (key -> value).

    Each iteration's ``total`` is its wall clock (``time_wall_s``); its phases are the stage's timers.
    """
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
        # The roles take turns: Ray's logical CPUs may exceed the cores, and each role uses every core
        # (the learner's threads are its CPUs; the engine roles' are threads_per_worker).
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
    iters = [{**{p: r[f"time_{p}_s"] for p in PHASES}, "total": r["time_wall_s"]} for r in rows]
    manifest = json.loads((run_dir / "rl_cai" / "MANIFEST.json").read_text())
    samples = [json.loads(line) for line in (run_dir / "rl_cai" / "samples.jsonl").read_text().splitlines() if line]
    return {
        "iterations": iters,
        "prompt_ids": [[x["prompt_id"] for x in samples if x["iteration"] == r["iteration"]] for r in rows],
        "samples_per_iteration": rows[0]["samples"],
        "startup_s": manifest.get("summary", {}).get("startup_s"),
        "process_wall_s": wall,
        "response_tokens_mean": median([r["response_length"] for r in rows]),
        "overrides": overrides,
    }


def run_once(name: str, s: Settings, policy: Path, rm: Path, data: Path, work: Path, update: Update) -> dict[str, Any]:
    """One process of side `name` (rlaif or trl) on the prompt file, in file order, with `update`'s PPO update."""
    if name == "rlaif":
        overrides = {
            "ppo.prompt_file": data,
            "ppo.ppo_epochs": update.epochs,
            "ppo.mini_batch_size": s.ppo_batch // update.mini_batches,
        }
        return run_rlaif(s, policy, rm, work, overrides)
    cfg = {
        "model": str(policy),
        "reward_model": str(rm),
        "data": str(data),
        "batch": s.ppo_batch,
        "micro_batch": min(4, s.ppo_batch),
        "ppo_epochs": update.epochs,
        "mini_batches": update.mini_batches,
        "iterations": s.ppo_iterations,
        "new_tokens": s.ppo_new_tokens,
        "threads": os.cpu_count() or 1,
        "device": s.device,
        "out_dir": str(work / "trl-out"),
    }
    return run_trl("ppo", cfg, work / "trl.json")


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


def spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Min, median and max over runs of the ratio TRL / rlaif, each side's median, and the median run's index."""
    ratios = [r["ratio_trl_over_rlaif"] for r in runs]
    by_ratio = sorted(range(len(runs)), key=lambda i: ratios[i])
    return {
        "ratio_min": min(ratios),
        "ratio_median": median(ratios),
        "ratio_max": max(ratios),
        # With an even number of runs, the lower of the two middle ones.
        "median_run": by_ratio[(len(runs) - 1) // 2],
        "rlaif_iteration_s": median([r["rlaif"]["iteration_s"] for r in runs]),
        "trl_iteration_s": median([r["trl"]["iteration_s"] for r in runs]),
        # Both sides generated for the same file rows, iteration by iteration, in every run.
        "same_prompt_rows": all(r["same_prompt_rows"] for r in runs),
    }


def prompt_rows(data: Path, side: dict[str, Any]) -> list[list[int]]:
    """The prompt file's rows each of rlaif's iterations sampled, from its samples' prompt ids."""
    row_of = {json.loads(line)["id"]: i for i, line in enumerate(data.read_text().splitlines())}
    return [[row_of.get(pid, -1) for pid in ids] for ids in side.get("prompt_ids", [])]


def write_prompt_file(path: Path, rows: int) -> int:
    """The first `rows` shipped red-team prompts, with their ids, as JSONL; returns how many there were."""
    from rlaif.core.prompts import load_prompts

    prompts = load_prompts("builtin:red_team")[:rows]
    if len(prompts) < rows:
        raise ValueError(f"the PPO benchmark needs {rows} prompts, the red-team set has {len(prompts)}")
    path.write_text("".join(json.dumps({"id": p.id, "prompt": p.prompt}) + "\n" for p in prompts))
    return len(prompts)


def run(s: Settings) -> dict[str, Any]:
    require("ray", "vllm", "deepspeed", "hydra")
    if s.device != "cpu":
        raise Skipped("the PPO benchmark is set up for CPU here (Ray, vLLM, DeepSpeed and TRL are not on the GPU node)")
    if not TRL_PYTHON.exists():
        raise Skipped("the TRL baseline venv bench/.venv-trl is missing: run bash bench/setup.sh")
    policy = resolve_bench_model(s.model)
    work = bench_cache() / "ppo"
    work.mkdir(exist_ok=True)
    rm = build_reward_model(policy, work / f"rm-{policy.name}")
    data = work / "prompts.jsonl"
    # Exactly one batch per iteration, so neither side wraps around (TRL's loader drops a last partial
    # batch and starts again at row 0, where rlaif's ppo.prompt_file would run on into row 0).
    rows = write_prompt_file(data, s.ppo_batch * s.ppo_iterations)
    threads, micro = os.cpu_count() or 1, min(4, s.ppo_batch)
    result: dict[str, Any] = {
        "setup": f"model {s.model}; {s.ppo_iterations} iterations ({s.ppo_warmup} warm-up) of {s.ppo_batch} prompts "
        f"x 1 sample from one prompt file of {rows} red-team prompts, read in file order by both sides (iteration k: "
        f"rows k·{s.ppo_batch} to k·{s.ppo_batch}+{s.ppo_batch - 1}); ≤ {s.ppo_new_tokens} new tokens; PPO epochs "
        f"{' and '.join(str(u.epochs) for u in UPDATES)}, each of 1 mini-batch (the whole batch), micro-batch "
        f"{micro}; fp32; {threads} threads per process (rlaif: per role); clock: wall "
        f"seconds from one iteration's end to the next (rlaif time_wall_s, TRL between on_step_end callbacks); "
        f"{s.repeats} runs per setting, alternating which side goes first",
        "prompt_file": str(data),
        "prompt_rows": rows,
        "order": "file order, no shuffle",
        "batch": s.ppo_batch,
        "micro_batch": micro,
        "threads": threads,
        "dtype": "float32",
        "clock": "wall seconds between iteration ends",
        "warmup_iterations": s.ppo_warmup,
        "repeats": s.repeats,
        "headline": UPDATES[0].key,
        "settings": {},
    }
    runs: dict[str, list[dict[str, Any]]] = {u.key: [] for u in UPDATES}
    for r in range(s.repeats):
        for update in UPDATES:
            order = ("rlaif", "trl") if r % 2 == 0 else ("trl", "rlaif")
            done: dict[str, Any] = {"run": r, "first": order[0]}
            for name in order:
                log(f"ppo: {update.label}, run {r + 1}/{s.repeats}: {name}")
                side = functools.partial(run_once, name, s, policy, rm, data, work, update)
                done[name] = summarise(with_cpu_shares(side), s.ppo_warmup)
                if "iteration_s" not in done[name]:
                    runs[update.key].append(done)
                    why = done[name].get("error") or done[name].get("skipped")
                    return {**result, "runs": runs, "error": f"{update.key} run {r}, {name}: {why}"}
            done["ratio_trl_over_rlaif"] = done["trl"]["iteration_s"] / done["rlaif"]["iteration_s"]
            done["same_prompt_rows"] = prompt_rows(data, done["rlaif"]) == done["trl"].get("rows_per_iteration")
            runs[update.key].append(done)
    for u in UPDATES:
        setting = {"label": u.label, "ppo_epochs": u.epochs, "mini_batches": u.mini_batches}
        result["settings"][u.key] = {**setting, "runs": runs[u.key], **spread(runs[u.key])}
    result["ratio_trl_over_rlaif_seconds"] = result["settings"][UPDATES[0].key]["ratio_median"]
    return result
