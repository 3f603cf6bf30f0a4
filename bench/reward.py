"""Reward-model training: rlaif's `RewardTrainer` against TRL's `RewardTrainer`, pairs/s.

    python -m bench --only reward
    python -m bench.reward rlaif CONFIG_JSON OUT_JSON     # one rlaif run, as `run` starts it

Like for like:

- the same start: one checkpoint both sides load, the policy's base with rlaif's fresh scalar
  head (`RewardModel.init_head`, torch seed 0), so their first losses agree;
- the same token ids, tokenised before either side starts: pairs (red-team prompts with two
  stand-in responses of 18-46 tokens after a 38-52-token shared prefix) rendered with the chat
  template and tokenised once (`rlaif.trainers.reward.encode_pair`, the last `max_len` tokens of
  each conversation) into a JSONL that both sides read. rlaif trains on them with
  `RewardTrainer.train_step_encoded`; TRL takes them as a processed dataset (``chosen_ids``,
  ``rejected_ids``), in file order. Neither side tokenises inside its timed steps;
- the same hard labels: the first response preferred with probability 1, so rlaif's soft-label
  Bradley-Terry loss is TRL's ``-log σ(r_chosen - r_rejected)`` and the loss columns compare;
- the same batch (pairs per step), steps, fp32, AdamW (lr 1e-5, betas (0.9, 0.95), eps 1e-8, no
  weight decay, constant rate, gradient norm clipped at 1), no gradient checkpointing, and torch
  threads (every core, set with ``torch.set_num_threads`` on both sides and recorded);
- one fresh process per run on each side:
  - ``rlaif``: one DeepSpeed rank (the reward_model stage's default config, ZeRO-2 with CPU Adam,
    which on a single fp32 rank runs as ZeRO stage 0 with the same CPU Adam; gloo), in the
    environment the stage gives a trainer rank (`rlaif.actors.trainer_group.trainer_env`: glibc
    malloc as ``cluster.trainer_malloc=retain``, ``OMP_NUM_THREADS``, DeepSpeed's op cache); each
    pair's shared prefix (system prompt, user turn) runs once and its key/value cache serves both
    responses (`rlaif.core.shared_prefix`);
  - ``trl``: `trl.RewardTrainer` (trl 1.12.0) in bench/.venv-trl (bench/trl_baseline.py).

Clock: wall time from the end of one optimizer step to the end of the next, everything in
between included (TRL: between ``on_step_end`` callbacks, the first from ``on_train_begin``, so
batch collation and logging are in; rlaif: around each ``train_step_encoded`` call, batch padding
included). A run's pairs/s is batch / its median step. Each side runs ``repeats`` times,
alternating which goes first; reported: each run's pairs/s and the ratio rlaif / TRL of the runs
made back to back, and the min, median (the headline) and max of that ratio.

A third row, rlaif on soft labels (p = 0.6, 0.7, 0.8, 0.9 over the pairs in turn, as a judge's
probabilities would be), run once: the loss the reward_model stage trains on. TRL's
`RewardTrainer` has no soft labels, so it is not part of the comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    TRL_PYTHON,
    Settings,
    Skipped,
    bench_cache,
    log,
    median,
    require,
    resolve_bench_model,
    run_baseline,
)

LR = 1e-5
SOFT_LABELS = (0.6, 0.7, 0.8, 0.9)


def write_start_model(base: Path, dest: Path) -> Path:
    """Save `base` with rlaif's fresh scalar head (torch seed 0) and its tokenizer to `dest`: both sides' start."""
    import shutil

    import torch
    from transformers import AutoTokenizer

    from rlaif.trainers.distributed import pad_token_id
    from rlaif.trainers.reward import RewardModel

    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    model = RewardModel.from_pretrained(str(base), pad_token_id(tokenizer), torch.float32)
    shutil.rmtree(dest, ignore_errors=True)
    model.model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def write_pairs(path: Path, count: int, tokenizer: Any, max_len: int) -> dict[str, float]:
    """Write `count` pairs, texts and token ids, to `path`; returns the conversations' min/mean/max tokens."""
    from rlaif.core.prompts import load_prompts
    from rlaif.engines.base import Message
    from rlaif.trainers.reward import RewardPair, encode_pair

    prompts = [p.prompt for p in load_prompts("builtin:red_team")]
    helpful = [p.prompt for p in load_prompts("builtin:helpful")] or prompts
    rows, lengths = [], []
    for i in range(count):
        a = " ".join(helpful[(i + k) % len(helpful)] for k in range(3))
        b = " ".join(helpful[(i + 7 + k) % len(helpful)] for k in range(2))
        prompt = prompts[i % len(prompts)]
        encoded = encode_pair(tokenizer, RewardPair(f"p{i}", (Message("user", prompt),), a, b, 1.0), max_len)
        lengths += [len(encoded.ids_a), len(encoded.ids_b)]
        rows.append(
            {
                "prompt": prompt,
                "chosen": a,
                "rejected": b,
                "chosen_ids": list(encoded.ids_a),
                "rejected_ids": list(encoded.ids_b),
                "p_soft": SOFT_LABELS[i % len(SOFT_LABELS)],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"min": min(lengths), "mean": sum(lengths) / len(lengths), "max": max(lengths)}


def rlaif_side(cfg: dict[str, Any]) -> dict[str, Any]:
    """One rlaif run in this process: `cfg["steps"]` steps on the file's pairs, hard or soft labels."""
    import torch

    torch.set_num_threads(cfg["threads"])
    from rlaif.trainers.distributed import find_free_port
    from rlaif.trainers.ds_config import build_ds_config
    from rlaif.trainers.reward import EncodedPair, RewardTrainer

    rows = [json.loads(line) for line in Path(cfg["data"]).read_text().splitlines() if line.strip()]
    soft = cfg["labels"] == "soft"
    pairs = [
        EncodedPair(f"p{i}", r["chosen_ids"], r["rejected_ids"], r["p_soft"] if soft else 1.0)
        for i, r in enumerate(rows)
    ]
    config = build_ds_config(
        zero_stage=2,
        micro_batch_size=cfg["batch"],
        grad_accum_steps=1,
        world_size=1,
        lr=cfg["lr"],
        weight_decay=0.0,
        grad_clip=1.0,
        bf16=False,
        offload_optimizer=True,
        warmup_steps=0,
    )
    trainer = RewardTrainer(cfg["model"], config, 0, 1, "127.0.0.1", find_free_port(), max_len=cfg["max_len"])
    b = cfg["batch"]
    steps, inner, losses = [], [], []
    mark = time.perf_counter()
    for k in range(cfg["steps"]):
        metrics = trainer.train_step_encoded(pairs[k * b : (k + 1) * b])
        now = time.perf_counter()
        steps.append(now - mark)
        mark = now
        inner.append(metrics["step_time_s"])
        losses.append(metrics["loss"])
        log(f"reward rlaif ({cfg['labels']} labels) step {k}: {steps[-1]:.2f} s, loss {losses[-1]:.4f}")
    return {
        **step_summary(steps, inner, losses, b),
        "labels": cfg["labels"],
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "zero_stage": trainer.zero_stage,
    }


def step_summary(steps: list[float], inner: list[float], losses: list[float], batch: int) -> dict[str, Any]:
    """What one run reports; `steps` is the wall clock between step ends, `inner` the trainer's own step timer."""
    step = median(steps)
    return {
        "steps": len(steps),
        "step_s": steps,
        "step_s_median": step,
        "samples_per_s": batch / step,
        "inner_step_s": inner,
        "inner_step_s_median": median(inner),
        "losses": losses,
        "first_loss": losses[0],
        "final_loss": losses[-1],
    }


def run_rlaif(cfg: dict[str, Any], out: Path, timeout: int = 1500) -> dict[str, Any]:
    """One rlaif run in its own process, with the environment the stage gives a trainer rank."""
    from rlaif.actors.trainer_group import default_torch_extensions_dir, trainer_env

    out.unlink(missing_ok=True)
    env = {**os.environ, **trainer_env(cfg["threads"], default_torch_extensions_dir())}
    # Its log lines go to this process's own output (bench/results/logs/reward.log).
    proc = subprocess.run(
        [sys.executable, "-m", "bench.reward", "rlaif", json.dumps(cfg), str(out)],
        cwd=ROOT,
        env=env,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0 or not out.is_file():
        return {"error": f"rlaif run exited {proc.returncode} (see logs/reward.log)"}
    return dict(json.loads(out.read_text()))


def run_trl(mode: str, cfg: dict[str, Any], out: Path, timeout: int = 1500) -> dict[str, Any]:
    if not TRL_PYTHON.exists():
        return {"skipped": "the TRL baseline venv bench/.venv-trl is missing: run bash bench/setup.sh"}
    script = str(ROOT / "bench" / "trl_baseline.py")
    return run_baseline(TRL_PYTHON, [script, mode, json.dumps(cfg), str(out)], out, f"trl {mode}", timeout)


def side_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side over its runs: medians of pairs/s and of the median step, each run's pairs/s, the first run's losses."""
    ok = [r for r in runs if "samples_per_s" in r]
    if not ok:
        return runs[0] if runs else {"error": "no runs"}
    return {
        "runs": len(ok),
        "samples_per_s": median([r["samples_per_s"] for r in ok]),
        "samples_per_s_runs": [r["samples_per_s"] for r in ok],
        "step_s_median": median([r["step_s_median"] for r in ok]),
        "inner_step_s_median": median([r["inner_step_s_median"] for r in ok]),
        "first_loss": ok[0]["first_loss"],
        "final_loss": ok[0]["final_loss"],
        "torch_threads": ok[0].get("torch_threads"),
    }


def run(s: Settings) -> dict[str, Any]:
    require("deepspeed")
    if s.device != "cpu":
        raise Skipped("the reward benchmark is set up for CPU here (DeepSpeed and TRL are not on the GPU node)")
    from transformers import AutoTokenizer

    from rlaif.trainers.ds_config import ADAM_BETAS

    work = bench_cache() / "reward"
    work.mkdir(exist_ok=True)
    log("reward: writing the start model and the tokenised pairs")
    start = write_start_model(resolve_bench_model(s.model), work / "start")
    data = work / "pairs.jsonl"
    lengths = write_pairs(data, s.rm_batch * s.rm_steps, AutoTokenizer.from_pretrained(start), s.rm_max_len)
    threads = os.cpu_count() or 1
    cfg = {
        "model": str(start),
        "data": str(data),
        "batch": s.rm_batch,
        "steps": s.rm_steps,
        "max_len": s.rm_max_len,
        "lr": LR,
        "adam_betas": list(ADAM_BETAS),
        "threads": threads,
        "device": s.device,
        "out_dir": str(work / "trl-out"),
    }
    runs: list[dict[str, Any]] = []
    for i in range(s.repeats):
        order = ("rlaif", "trl") if i % 2 == 0 else ("trl", "rlaif")
        got: dict[str, Any] = {"first": order[0]}
        for side in order:
            log(f"reward run {i + 1}/{s.repeats}: {side}")
            if side == "rlaif":
                got[side] = run_rlaif({**cfg, "labels": "hard"}, work / "rlaif.json")
            else:
                got[side] = run_trl("reward", cfg, work / "trl.json")
        a, b = got["rlaif"].get("samples_per_s"), got["trl"].get("samples_per_s")
        if a and b:
            got["ratio"] = a / b
        runs.append(got)
    log("reward: rlaif on soft labels")
    result: dict[str, Any] = {
        "setup": f"model {s.model}, {s.rm_steps} steps of {s.rm_batch} pairs, conversations of "
        f"{lengths['min']}-{lengths['max']} tokens (mean {lengths['mean']:.0f}; max length {s.rm_max_len}), "
        f"tokenised before either side starts; fp32, AdamW lr {LR:g}, betas {ADAM_BETAS}, constant; "
        f"{threads} torch threads per side; one process per run (rlaif's with a trainer rank's environment: "
        "cluster.trainer_malloc=retain, OMP_NUM_THREADS); both start from one checkpoint",
        "clock": "wall time between consecutive step ends (TRL: on_step_end callbacks, the first from "
        "on_train_begin; rlaif: around train_step_encoded), median per run",
        "threads": threads,
        "token_lengths": lengths,
        "runs": runs,
        "rlaif": side_summary([r["rlaif"] for r in runs]),
        "trl": side_summary([r["trl"] for r in runs]),
        "rlaif_soft": run_rlaif({**cfg, "labels": "soft"}, work / "rlaif-soft.json"),
        "soft_labels": list(SOFT_LABELS),
    }
    ratios = [r["ratio"] for r in runs if "ratio" in r]
    if ratios:
        result.update(ratio_rlaif_over_trl=median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
    return result


if __name__ == "__main__":
    side, config, out_path = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    if side != "rlaif":
        sys.exit(f"usage: python -m bench.reward rlaif CONFIG_JSON OUT_JSON (got {side!r})")
    out_path.write_text(json.dumps(rlaif_side(config), indent=2))
    sys.stdout.flush()
    # DeepSpeed's process group may leave threads behind; the result is written.
    os._exit(0)
