"""The DeepSpeed config of a stage's trainer group: the run's `deepspeed` group plus the stage's optimiser fields."""

from __future__ import annotations

from typing import Any, Protocol

from rlaif.config import DeepSpeedConfig
from rlaif.trainers.ds_config import build_ds_config


class OptimiserFields(Protocol):
    """What `SFTConfig` and `RewardModelConfig` share."""

    micro_batch_size: int
    grad_accum_steps: int
    lr: float
    weight_decay: float
    grad_clip: float
    warmup_steps: int


def stage_ds_config(ds: DeepSpeedConfig, opt: OptimiserFields, world_size: int) -> dict[str, Any]:
    return build_ds_config(
        zero_stage=ds.zero_stage,
        micro_batch_size=opt.micro_batch_size,
        grad_accum_steps=opt.grad_accum_steps,
        world_size=world_size,
        lr=opt.lr,
        weight_decay=opt.weight_decay,
        grad_clip=opt.grad_clip,
        bf16=ds.bf16,
        offload_optimizer=ds.offload_optimizer,
        warmup_steps=opt.warmup_steps,
    )
