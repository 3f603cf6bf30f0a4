"""Stage `reward_model` (docs/design.md §1 stage 2 step 6): a preference model trained on the judge's soft labels.

A `TrainerGroup` of `RewardTrainer` ranks (`cluster.reward_trainer` ranks, ZeRO stage
and offloading from `deepspeed`) trains a scalar-head model started from
`reward_model.base_model` (default `model.name`, the policy's base) with the
soft-label Bradley-Terry loss on ``<run_dir>/preferences/``'s pairs and labels.
Prompts are split into train and held-out by stable id. The held-out split is scored
when training starts (or resumes) and after it: loss, accuracy of
P(a ≻ b) = σ(r_a - r_b) against the judge's majority label (its soft label
thresholded at 0.5), and the calibration error (ECE) of that probability. Metrics go through ``ctx.sink``.

Outputs under ``<run_dir>/reward_model/``: ``model/`` (a Hugging Face folder that
`rlaif.actors.reward_scorer.RewardScorer` loads for PPO), ``steps.jsonl`` (per-step
training metrics) and the MANIFEST. With ``checkpoint_every`` set, a killed run
resumes from its last DeepSpeed checkpoint under ``checkpoints/``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.trainer_group import TrainerGroup
from rlaif.config import RunConfig
from rlaif.core.io import read_manifest, write_jsonl, write_manifest
from rlaif.core.losses import bradley_terry_loss
from rlaif.core.metrics import accuracy, expected_calibration_error, summarise
from rlaif.core.preference_records import read_labels, read_pairs
from rlaif.core.prompts import PromptRecord, split_train_heldout
from rlaif.core.resume import StepLog
from rlaif.core.schedule import cycled_batches
from rlaif.core.soft_labels import hard_label
from rlaif.engines.base import Message
from rlaif.engines.models import resolve_model
from rlaif.stages.ds_setup import stage_ds_config
from rlaif.stages.pipeline import StageContext
from rlaif.trainers.reward import RewardPair, RewardTrainer, render_conversation

log = logging.getLogger(__name__)

STAGE = "reward_model"


def reward_model_stage(ctx: StageContext) -> None:
    """Train, evaluate on the held-out split, save the model folder; the manifest last."""
    run, cfg, out = ctx.run, ctx.run.reward_model, ctx.stage_dir(STAGE)
    train, heldout = load_reward_pairs(ctx.stage_dir("preferences"), cfg.heldout_fraction, run.seed)
    base = resolve_model(cfg.base_model) if cfg.base_model else ctx.base_model
    settings = {
        "reward_model": asdict(cfg),
        "base_model": str(base),
        "deepspeed": asdict(run.deepspeed),
        "ranks": run.cluster.reward_trainer.num_workers,
        "preferences": (read_manifest(ctx.stage_dir("preferences")) or {}).get("config_hash"),
        "seed": run.seed,
    }
    work = StepLog(out / "work", settings)
    group = start_group(run, base)
    try:
        step = resume(group, out / "checkpoints", work)
        before = heldout_metrics(group, base, heldout, cfg.ece_bins)
        ctx.sink.log({f"heldout_{k}": v for k, v in before.items()}, step=step)
        train_steps(ctx, group, train, step, out / "checkpoints", work)
        after = heldout_metrics(group, base, heldout, cfg.ece_bins)
        ctx.sink.log({f"heldout_{k}": v for k, v in after.items()}, step=cfg.steps)
        group.run_all("save", str(out / "model"))
    finally:
        group.shutdown()
    rows = work.rows("steps")
    steps = [rows[f"step-{s}"] for s in range(1, cfg.steps + 1)]
    write_jsonl(out / "steps.jsonl", steps)
    write_manifest(
        out,
        {"train_pairs": len(train), "heldout_pairs": len(heldout), "steps": len(steps)},
        settings,
        heldout_before=before,
        heldout_after=after,
        train_loss_first=steps[0]["loss"],
        train_loss_last=steps[-1]["loss"],
        step_time_s=summarise([r["step_time_s"] for r in steps])._asdict(),
    )
    ctx.sink.artifact("model", "model", str(out / "model"))
    # The model folder and the manifest are in place: the resume checkpoints are spent.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    log.info("reward model: held-out before %s, after %s", before, after)


# Added to the run's seed for the reward model's own train/held-out split of the labelled prompts.
RM_SPLIT_SALT = 1_000_003


def load_reward_pairs(
    preferences: Path, heldout_fraction: float, seed: int
) -> tuple[list[RewardPair], list[RewardPair]]:
    """The labelled pairs as `RewardPair`s, split into (train, held-out) by prompt id."""
    if read_manifest(preferences) is None:
        raise ValueError(
            f"reward_model: no finished preferences stage at {preferences} (no MANIFEST.json); "
            "run the `preferences` stage first"
        )
    pairs = read_pairs(preferences / "pairs.jsonl")
    labels = {label.pair_id: label for label in read_labels(preferences / "labels.jsonl")}
    missing = [p.id for p in pairs if p.id not in labels]
    if missing:
        raise ValueError(f"{preferences / 'labels.jsonl'}: no label for pair(s) {missing[:3]}")
    data = [
        RewardPair(p.id, (Message("user", p.prompt),), p.response_a, p.response_b, labels[p.id].p_first) for p in pairs
    ]
    held_ids = heldout_prompt_ids([PromptRecord(p.prompt_id, p.prompt) for p in pairs], heldout_fraction, seed)
    train = [d for d, p in zip(data, pairs, strict=True) if p.prompt_id not in held_ids]
    heldout = [d for d, p in zip(data, pairs, strict=True) if p.prompt_id in held_ids]
    if not train or not heldout:
        raise ValueError(
            f"reward_model: {len(pairs)} labelled pairs split into {len(train)} train and {len(heldout)} held-out "
            f"(heldout_fraction={heldout_fraction}); label more prompts (label.num_prompts)"
        )
    return train, heldout


def heldout_prompt_ids(prompts: Sequence[PromptRecord], heldout_fraction: float, seed: int) -> set[str]:
    """The ids of the labelled prompts whose pairs the reward model holds out, from the run's `seed`.

    A seed of its own (`RM_SPLIT_SALT` added): sl_cai's evaluation split hashes the same prompt ids
    with the run's seed, and every labelled prompt comes from its train side, so with
    reward_model.heldout_fraction at or below sl_cai.heldout_fraction the same hash would hold out
    none of them.
    """
    _, held = split_train_heldout(prompts, heldout_fraction, seed + RM_SPLIT_SALT)
    return {r.id for r in held}


def start_group(run: RunConfig, base: Path) -> TrainerGroup:
    cfg, ranks, ds = run.reward_model, run.cluster.reward_trainer, run.deepspeed
    ds_config = stage_ds_config(ds, cfg, ranks.num_workers)
    spec = RoleGroupSpec(
        "reward_trainer",
        ranks.num_workers,
        ranks.cpus_per_worker,
        ranks.gpus_per_worker,
        run.cluster.placement_strategy,
    )
    args = {
        "model_path": str(base),
        "ds_config": ds_config,
        "gradient_checkpointing": ds.gradient_checkpointing,
        "seed": run.seed,
        "max_len": cfg.max_len,
        "trust_remote_code": run.model.trust_remote_code,
    }
    return TrainerGroup(RewardTrainer, spec, args, malloc=run.cluster.trainer_malloc)


def resume(group: TrainerGroup, checkpoints: Path, work: StepLog) -> int:
    """The optimizer step to continue from: the last checkpoint's, or 0 (then old step logs are dropped)."""
    if (checkpoints / "latest").is_file():
        step: int = group.run_all("load_checkpoint", str(checkpoints))[0]
        log.info("reward model: resuming from step %d (%s)", step, checkpoints)
        return step
    # Without a checkpoint training restarts from the base model: rows of a killed run would mix in.
    work.path("steps").unlink(missing_ok=True)
    return 0


def train_steps(
    ctx: StageContext, group: TrainerGroup, train: Sequence[RewardPair], done: int, checkpoints: Path, work: StepLog
) -> None:
    """Steps ``done + 1 .. reward_model.steps`` over the cycled training pairs; metrics logged per step."""
    cfg = ctx.run.reward_model
    global_batch = cfg.micro_batch_size * cfg.grad_accum_steps * group.world_size
    batches = cycled_batches(train, global_batch, cfg.steps, ctx.run.seed)
    bar = tqdm(batches[done:], desc="rm", unit="step", initial=done, total=cfg.steps)
    for step, batch in enumerate(bar, start=done + 1):
        metrics: dict[str, float] = group.run("train_step", [(s,) for s in group.shard(batch)])[0]
        if "loss" in metrics:
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        ctx.sink.log({f"train_{k}": v for k, v in metrics.items() if k != "step"}, step=step)
        work.append("steps", [{"id": f"step-{step}", **metrics}])
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            group.run_all("save_checkpoint", str(checkpoints))


def heldout_metrics(group: TrainerGroup, base: Path, pairs: Sequence[RewardPair], bins: int) -> dict[str, float]:
    """Loss, accuracy against the judge's majority label, and ECE of σ(r_a - r_b) on `pairs`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    texts = [render_conversation(tokenizer, p.prompt_messages, r) for p in pairs for r in (p.response_a, p.response_b)]
    rewards = torch.tensor([r for part in group.run("score", [(s,) for s in group.shard(texts, False)]) for r in part])
    r_a, r_b = rewards[0::2], rewards[1::2]
    p = torch.tensor([pair.p_a for pair in pairs])
    prob_a = torch.sigmoid(r_a - r_b)
    majority = [float(hard_label(pair.p_a)) for pair in pairs]
    return {
        "loss": float(bradley_terry_loss(r_a, r_b, p)),
        "accuracy": accuracy(prob_a, majority),
        "ece": expected_calibration_error(prob_a, majority, bins),
        "margin": float((r_a - r_b).mean()),
    }
