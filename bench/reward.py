"""Reward-model training: rlaif's `RewardTrainer` against TRL's `RewardTrainer`, pairs/s.

Same model (the policy's base with a fresh scalar head), same pairs (red-team prompts with
two stand-in responses of 18-46 tokens after a 38-52-token shared prefix, written once to a JSONL
that both sides read),
chat template, max length, batch size (pairs per step), number of steps, fp32, AdamW-family
optimizer, lr 1e-5, no gradient checkpointing, and one process each:

- ``rlaif``: one DeepSpeed rank in this process (the reward_model stage's default config, ZeRO-2
  with CPU Adam, which on a single fp32 rank runs as ZeRO stage 0 with the same CPU Adam; gloo);
  soft-label Bradley-Terry loss; each pair's shared prefix (system prompt, user turn) encoded
  once and its key/value cache shared by both responses (`rlaif.core.shared_prefix`); glibc
  set, through ``mallopt``, as the stage's ranks are by ``cluster.trainer_malloc=retain``;
- ``trl``: `trl.RewardTrainer` (trl 1.12.0) in bench/.venv-trl, its own process.

Reported: median seconds per optimizer step (the first step, with its warm-up, included in the
median's input but not dominating it), pairs/s = batch / median step time, and the ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from bench.common import ROOT, TRL_PYTHON, Settings, Skipped, bench_cache, log, median, require, resolve_bench_model


def write_pairs(path: Path, count: int) -> None:
    from rlaif.core.prompts import load_prompts

    prompts = [p.prompt for p in load_prompts("builtin:red_team")]
    helpful = [p.prompt for p in load_prompts("builtin:helpful")] or prompts
    rows = []
    for i in range(count):
        a = " ".join(helpful[(i + k) % len(helpful)] for k in range(3))
        b = " ".join(helpful[(i + 7 + k) % len(helpful)] for k in range(2))
        rows.append({"prompt": prompts[i % len(prompts)], "chosen": a, "rejected": b})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_rlaif(s: Settings, model: str, data: Path) -> dict[str, Any]:
    from rlaif.engines.base import Message
    from rlaif.trainers.distributed import find_free_port
    from rlaif.trainers.ds_config import build_ds_config
    from rlaif.trainers.reward import RewardPair, RewardTrainer

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    pairs = [
        RewardPair(f"p{i}", (Message("user", r["prompt"]),), r["chosen"], r["rejected"], 1.0)
        for i, r in enumerate(rows)
    ]
    retain_freed_memory()
    config = build_ds_config(2, s.rm_batch, 1, 1, 1e-5, 0.0, 1.0, False, True, 0)
    trainer = RewardTrainer(model, config, 0, 1, "127.0.0.1", find_free_port(), max_len=s.rm_max_len)
    steps, loss = [], None
    for k in range(s.rm_steps):
        batch = pairs[k * s.rm_batch : (k + 1) * s.rm_batch]
        metrics = trainer.train_step(batch)
        steps.append(metrics["step_time_s"])
        loss = metrics["loss"]
        log(f"reward rlaif step {k}: {steps[-1]:.2f} s")
    step = median(steps)
    import torch

    return {
        "steps": len(steps),
        "step_s": steps,
        "step_s_median": step,
        "samples_per_s": s.rm_batch / step,
        "final_loss": loss,
        "torch_threads": torch.get_num_threads(),
        "zero_stage": trainer.zero_stage,
    }


def retain_freed_memory() -> None:
    """Apply, in this running process, the glibc settings that ``cluster.trainer_malloc=retain`` gives a
    trainer rank at its start (`rlaif.actors.trainer_group.RETAIN_ENV`), through ``mallopt``."""
    import ctypes

    from rlaif.actors.trainer_group import RETAIN_ENV

    libc = ctypes.CDLL("libc.so.6")
    # mallopt's option numbers (malloc.h); it takes a C int, so the trim threshold is capped there.
    options = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2, "MALLOC_MMAP_MAX_": -4, "MALLOC_ARENA_MAX": -8}
    for name, option in options.items():
        value = min(int(RETAIN_ENV[name]), 2**31 - 1)
        if libc.mallopt(option, value) != 1:
            raise RuntimeError(f"mallopt({name}={value}) failed")


def run_trl(mode: str, cfg: dict[str, Any], out: Path, timeout: int = 1500) -> dict[str, Any]:
    if not TRL_PYTHON.exists():
        return {"skipped": "the TRL baseline venv bench/.venv-trl is missing: run bash bench/setup.sh"}
    out.unlink(missing_ok=True)
    # A rendezvous left in the environment by this process's own torch.distributed group would make
    # accelerate start a distributed run there.
    drop = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "CROSS_RANK")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("ACCELERATE_")}
    proc = subprocess.run(
        [str(TRL_PYTHON), str(ROOT / "bench" / "trl_baseline.py"), mode, json.dumps(cfg), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        print("\n".join(tail))
        return {"error": f"trl {mode} exited {proc.returncode}", "log_tail": tail}
    return dict(json.loads(out.read_text()))


def run(s: Settings) -> dict[str, Any]:
    require("deepspeed")
    if s.device != "cpu":
        raise Skipped("the reward benchmark is set up for CPU here (DeepSpeed and TRL are not on the GPU node)")
    model = str(resolve_bench_model(s.model))
    work = bench_cache() / "reward"
    work.mkdir(exist_ok=True)
    data = work / "pairs.jsonl"
    write_pairs(data, s.rm_batch * s.rm_steps)
    result: dict[str, Any] = {
        "setup": f"model {s.model}, {s.rm_steps} steps of {s.rm_batch} pairs, max length {s.rm_max_len} tokens, "
        "fp32, one process per side (rlaif's with the stage's allocator settings, cluster.trainer_malloc=retain)",
        "rlaif": run_rlaif(s, model, data),
    }
    log("reward: TRL RewardTrainer")
    cfg = {
        "model": model,
        "data": str(data),
        "batch": s.rm_batch,
        "steps": s.rm_steps,
        "max_len": s.rm_max_len,
        "device": s.device,
        "out_dir": str(work / "trl-out"),
    }
    result["trl"] = run_trl("reward", cfg, work / "trl.json")
    a, b = result["rlaif"].get("samples_per_s"), result["trl"].get("samples_per_s")
    if a and b:
        result["ratio_rlaif_over_trl"] = a / b
    return result
