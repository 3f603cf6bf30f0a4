"""Stage ``sft``: supervised fine-tuning on the SL-CAI final revisions (Bai et al. 2022, §3).

Reads ``<run_dir>/sl_cai/records.jsonl`` and ``helpful.jsonl``, keeps the final
revisions of non-degenerate records, mixes in benign answers (task-style helpful and
sensitive-request ones, minus refusals) at ``sft.helpful_ratio``
(`rlaif.core.cai.mix_sft`), and trains the base model on them with a TrainerGroup of
``cluster.sft_trainer.num_workers`` DeepSpeed ranks (ZeRO stage from ``deepspeed``);
the loss is on assistant tokens only (`rlaif.trainers.sft`).

Outputs under ``<run_dir>/sft/``:

- ``data.jsonl``: the mixed examples (ids ``rev:<record id>`` and ``help:<prompt id>``);
- ``checkpoints/``: the newest resumable DeepSpeed checkpoint (every
  ``sft.checkpoint_every`` steps), removed once the model is saved;
- ``losses.jsonl``: one row of metrics per optimizer step;
- ``model/``: the fine-tuned model as a Hugging Face folder (safetensors + tokenizer)
  that both engines load;
- ``MANIFEST.json`` last: counts, losses before/after on training examples, step time.

    python -m rlaif.run stages=[sl_cai,sft] sft.steps=200 cluster.sft_trainer.num_workers=4
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.trainer_group import TrainerGroup
from rlaif.config import RunConfig
from rlaif.core.cai import SFTSample, SLCAIRecord, mix_sft, sft_batch, sft_samples
from rlaif.core.io import append_jsonl, atomic_write_text, read_jsonl, write_jsonl, write_manifest
from rlaif.core.refusal import is_refusal
from rlaif.core.resume import drop_torn_tail
from rlaif.engines.base import Message
from rlaif.stages.ds_setup import stage_ds_config
from rlaif.stages.pipeline import StageContext
from rlaif.trainers.sft import SFTExample, SFTTrainer

log = logging.getLogger(__name__)

STAGE = "sft"


def sft_mix(sl_cai_dir: Path, helpful_ratio: float, seed: int) -> tuple[list[SFTSample], int]:
    """Final revisions of non-degenerate records plus benign answers at `helpful_ratio`; and the refusals left out.

    The benign answers (task-style helpful and sensitive-request ones) are checked with the
    refusal detector here as well as in sl_cai (an older or hand-made ``helpful.jsonl`` may lack
    the mark): a refusal of a benign request is the evasiveness SFT must not learn.
    """
    records_path, helpful_path = sl_cai_dir / "records.jsonl", sl_cai_dir / "helpful.jsonl"
    for path in (records_path, helpful_path):
        if not path.is_file():
            raise ValueError(f"sft: {path} is missing; run the sl_cai stage first")
    records = [SLCAIRecord.from_dict(row) for row in read_jsonl(records_path)]
    usable = [row for row in read_jsonl(helpful_path) if not row["degenerate"]]
    kept = [row for row in usable if not (row.get("refusal") or is_refusal(row["answer"]))]
    helpful = [SFTSample(f"help:{row['id']}", row["prompt"], row["answer"], row.get("kind", "helpful")) for row in kept]
    samples = mix_sft(sft_samples(records), helpful, helpful_ratio, seed)
    if not samples:
        raise ValueError(f"sft: no usable examples in {sl_cai_dir} (every revision and helpful answer is degenerate)")
    return samples, len(usable) - len(kept)


def to_example(sample: SFTSample) -> SFTExample:
    return SFTExample(sample.id, (Message("user", sample.prompt), Message("assistant", sample.response)))


def _start_group(run: RunConfig, model_path: Path) -> TrainerGroup:
    cfg, ds, r = run.sft, run.deepspeed, run.cluster.sft_trainer
    ds_config = stage_ds_config(ds, cfg, r.num_workers)
    spec = RoleGroupSpec(
        "sft_trainer", r.num_workers, r.cpus_per_worker, r.gpus_per_worker, run.cluster.placement_strategy
    )
    args = {
        "model_path": str(model_path),
        "ds_config": ds_config,
        "gradient_checkpointing": ds.gradient_checkpointing,
        "seed": run.seed,
        "max_len": cfg.max_len,
        "trust_remote_code": run.model.trust_remote_code,
    }
    log.info("starting %d SFT rank(s), ZeRO-%d", r.num_workers, ds.zero_stage)
    return TrainerGroup(SFTTrainer, spec, args, malloc=run.cluster.trainer_malloc)


def sft_stage(ctx: StageContext) -> None:
    """The stage: mix, train with checkpoints, save the model, manifest last."""
    run, cfg, out = ctx.run, ctx.run.sft, ctx.stage_dir(STAGE)
    samples, refusals = sft_mix(ctx.stage_dir("sl_cai"), cfg.helpful_ratio, run.seed)
    if refusals:
        log.info("sft: left out %d refusals of benign requests", refusals)
    write_jsonl(out / "data.jsonl", ({"id": s.id, "prompt": s.prompt, "response": s.response} for s in samples))
    examples = {s.id: to_example(s) for s in samples}
    probe = [examples[s.id] for s in samples[: cfg.eval_examples]]
    group = _start_group(run, ctx.base_model)
    try:
        start = _resume(group, out / "checkpoints")
        loss_before = _loss_before(group, probe, out / "loss_before.json", start)
        _train(ctx, group, samples, examples, start)
        loss_after = _eval(group, probe)
        group.run_all("save", str(out / "model"))
    finally:
        group.shutdown()
    # The model folder is the stage's product; the optimizer state is gigabytes that nothing reads again.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    losses = _losses(out / "losses.jsonl", cfg.steps)
    step_times = [row["step_time_s"] for row in losses]
    summary = {
        "loss_before": loss_before,
        "loss_after": loss_after,
        "first_step_loss": losses[0]["loss"],
        "last_step_loss": losses[-1]["loss"],
        "step_time_s_median": statistics.median(step_times),
        "resumed_from_step": start,
    }
    ctx.sink.log({k: float(v) for k, v in summary.items() if v is not None})
    ctx.sink.artifact("model", "model", str(out / "model"))
    write_manifest(
        out,
        {
            "examples": len(samples),
            "revisions": sum(s.source == "revision" for s in samples),
            "sensitive": sum(s.source == "sensitive" for s in samples),
            "dropped_benign_refusals": refusals,
            "steps": cfg.steps,
        },
        {"sft": asdict(cfg), "deepspeed": asdict(run.deepspeed), "ranks": run.cluster.sft_trainer.num_workers}
        | {"model": run.model.name, "seed": run.seed},
        losses=[row["loss"] for row in losses],
        **summary,
    )
    print(
        f"\nsft: {cfg.steps} steps on {len(samples)} examples, loss {losses[0]['loss']:.3f} -> "
        f"{losses[-1]['loss']:.3f}, {summary['step_time_s_median']:.1f} s/step (median)\n"
        f"sft: wrote the model to {out / 'model'}"
    )


def _resume(group: TrainerGroup, checkpoints: Path) -> int:
    """The step to start from: the newest checkpoint's, or 0."""
    if not (checkpoints / "latest").is_file():
        return 0
    step = int(group.run_all("load_checkpoint", str(checkpoints))[0])
    log.info("sft: resumed from the checkpoint at step %d in %s", step, checkpoints)
    return step


def _loss_before(group: TrainerGroup, probe: Sequence[SFTExample], path: Path, start: int) -> float | None:
    """The probe loss of the untrained model, kept on disk so that a resumed run still reports it."""
    if path.is_file():
        value: float | None = json.loads(path.read_text())["loss_before"]
        return value
    if start > 0:
        return None
    loss = _eval(group, probe)
    atomic_write_text(path, json.dumps({"loss_before": loss}) + "\n")
    return loss


def _eval(group: TrainerGroup, probe: Sequence[SFTExample]) -> float | None:
    if not probe:
        return None
    shards = group.shard(probe, drop_remainder=False)
    return float(group.run("eval_loss", [(s,) for s in shards])[0])


def _train(
    ctx: StageContext, group: TrainerGroup, samples: Sequence[SFTSample], examples: dict[str, SFTExample], start: int
) -> None:
    """Optimizer steps `start`..`steps`-1: a global batch each, sharded over the ranks."""
    run, cfg, out = ctx.run, ctx.run.sft, ctx.stage_dir(STAGE)
    global_batch = cfg.micro_batch_size * cfg.grad_accum_steps * group.world_size
    bar = tqdm(range(start, cfg.steps), desc="sft", unit="step", initial=start, total=cfg.steps)
    for step in bar:
        batch = [examples[s.id] for s in sft_batch(samples, step, global_batch, run.seed)]
        metrics: dict[str, float] = group.run("train_step", [(shard,) for shard in group.shard(batch)])[0]
        drop_torn_tail(out / "losses.jsonl")
        append_jsonl(out / "losses.jsonl", [metrics | {"step": step + 1}])
        ctx.sink.log({k: v for k, v in metrics.items() if k != "step"}, step=step + 1)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", s_per_step=f"{metrics['step_time_s']:.1f}")
        done = step + 1
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            _checkpoint(group, out / "checkpoints", done)


def _checkpoint(group: TrainerGroup, directory: Path, step: int) -> None:
    group.run_all("save_checkpoint", str(directory))
    # Keep only the newest tag: each holds the full optimizer state.
    for old in directory.glob("step*"):
        if old.name != f"step{step}":
            shutil.rmtree(old, ignore_errors=True)


def _losses(path: Path, steps: int) -> list[dict[str, Any]]:
    """Per-step metrics; a step re-run after a resume replaces its earlier row (last wins)."""
    by_step = {int(row["step"]): row for row in read_jsonl(path, tolerate_torn_tail=True)}
    return [by_step[s] for s in sorted(by_step) if s <= steps]
