"""DeepSpeed configuration for rlaif's trainers, built from explicit values.

`build_ds_config(...)` returns the dict that `deepspeed.initialize(config=...)`
takes, with the optimizer and learning-rate schedule inside it (docs/design.md §7:
DeepSpeed then picks its own Adam kernel instead of wrapping a torch optimizer):

- ``offload_optimizer=True``: ZeRO keeps fp32 master weights and Adam state in CPU
  memory and steps them with ``DeepSpeedCPUAdam`` (an AVX kernel compiled on first
  use, about a minute, cached in ``TORCH_EXTENSIONS_DIR``). The usual choice on CPU
  machines, and on GPUs whose memory is short.
- ``offload_optimizer=False``: ``FusedAdam`` — a CUDA kernel on GPUs; on CPU
  DeepSpeed compiles a CPU build of it (about two minutes, once).

Both run on CPU over gloo with fp32 weights; CPU runs must pass ``bf16=False``
(no native bf16 there: a bf16 backward pass is about 100x slower, docs/design.md §7).

One fp32 rank (``world_size=1``, ZeRO-1/2, ``offload_optimizer=True``) has nothing to
shard, and ZeRO's gradient buckets and fp32 partition still copy every gradient
several times per step: measured on the embedded model (one thread, 4 sequences of
~80 tokens) the backward pass takes 3.3-6.7 s under ZeRO-2 against 2.5-3.1 s without.
Such a config runs as ZeRO stage 0 with the same optimizer, DeepSpeedCPUAdam, built by
`rlaif.trainers.distributed.create_engine` from the ``CPU_ADAM_KEY`` entry (it also
clips, so DeepSpeed's own ``gradient_clipping`` is 0 there); updates are the same.

The schedule is DeepSpeed's ``WarmupLR``: linear warm-up from 0 to ``lr`` over
``warmup_steps`` optimizer steps, then constant. DeepSpeed's WarmupLR gives the
minimum rate to the first two steps (its iteration -1 and 0), so with warm-up the
first two updates are no-ops; ``warmup_steps=0`` gives a constant ``lr`` from the
first step.

    python -m rlaif.trainers.ds_config     # print an example config
"""

from __future__ import annotations

import json
from typing import Any

# Adam betas as in most LM fine-tuning recipes (OpenRLHF, TRL): a shorter memory in
# the second moment than torch's default 0.999 tolerates the spiky gradients of RL.
ADAM_BETAS = (0.9, 0.95)

# A single-rank fp32 config's optimizer, built by rlaif rather than DeepSpeed (see the module docstring):
# {"lr", "betas", "eps", "weight_decay", "grad_clip"}. `create_engine` removes it before DeepSpeed sees it.
CPU_ADAM_KEY = "rlaif_cpu_adam"


def build_ds_config(
    zero_stage: int,
    micro_batch_size: int,
    grad_accum_steps: int,
    world_size: int,
    lr: float,
    weight_decay: float,
    grad_clip: float,
    bf16: bool,
    offload_optimizer: bool,
    warmup_steps: int,
) -> dict[str, Any]:
    """A DeepSpeed config for training one model on `world_size` data-parallel ranks.

    The global batch per optimizer step is
    ``micro_batch_size * grad_accum_steps * world_size`` examples.

    Args:
        zero_stage: 0 (plain data parallel), 1, 2 (shard optimizer state and
            gradients) or 3 (also shard parameters).
        micro_batch_size: examples per forward/backward pass on one rank.
        grad_accum_steps: micro-batches accumulated per optimizer step.
        world_size: number of data-parallel ranks.
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) weight decay.
        grad_clip: clip the global gradient norm to this; 0 disables clipping.
        bf16: train in bf16 (GPUs); False trains in fp32 (CPU).
        offload_optimizer: keep optimizer state on CPU and step it with
            DeepSpeedCPUAdam. With ``world_size=1``, ``zero_stage`` 1 or 2 and
            fp32 the config is ZeRO stage 0 with DeepSpeedCPUAdam under
            ``CPU_ADAM_KEY`` (nothing to shard on one rank).
        warmup_steps: optimizer steps of linear warm-up; 0 for none.

    Raises:
        ValueError: naming the first invalid argument.
    """
    _validate(zero_stage, micro_batch_size, grad_accum_steps, world_size, lr, weight_decay, grad_clip, warmup_steps)
    if offload_optimizer and zero_stage == 0:
        raise ValueError("offload_optimizer needs zero_stage >= 1 (ZeRO owns the offloaded optimizer state)")
    zero: dict[str, Any] = {
        "stage": zero_stage,
        # Overlapping communication with backward needs CUDA streams; on gloo it only adds copies.
        "overlap_comm": False,
        "contiguous_gradients": True,
    }
    if offload_optimizer:
        # pin_memory needs a CUDA runtime; pinned pages buy nothing without a device to copy to.
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if zero_stage == 3:
        # Lets engine.save_16bit_model and our own gathering see whole tensors (ZeRO-3 shards them).
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "train_batch_size": micro_batch_size * grad_accum_steps * world_size,
        "gradient_clipping": grad_clip,
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": lr, "betas": list(ADAM_BETAS), "eps": 1e-8, "weight_decay": weight_decay},
        },
        "scheduler": _warmup_scheduler(lr, warmup_steps),
        "bf16": {"enabled": bf16},
        # Metrics travel back in train_step's results; DeepSpeed's own printing would only add noise.
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if world_size == 1 and zero_stage in (1, 2) and offload_optimizer and not bf16:
        adam = dict(config.pop("optimizer")["params"])
        adam["grad_clip"] = grad_clip
        config[CPU_ADAM_KEY] = adam
        config["zero_optimization"] = {"stage": 0}
        config["gradient_clipping"] = 0.0
    return config


def _warmup_scheduler(lr: float, warmup_steps: int) -> dict[str, Any]:
    if warmup_steps == 0:
        # WarmupLR with min == max is a constant schedule; DeepSpeed insists on >= 2 warm-up steps.
        return {"type": "WarmupLR", "params": {"warmup_min_lr": lr, "warmup_max_lr": lr, "warmup_num_steps": 2}}
    return {
        "type": "WarmupLR",
        "params": {
            "warmup_min_lr": 0.0,
            "warmup_max_lr": lr,
            "warmup_num_steps": warmup_steps,
            "warmup_type": "linear",
        },
    }


def _validate(
    zero_stage: int,
    micro_batch_size: int,
    grad_accum_steps: int,
    world_size: int,
    lr: float,
    weight_decay: float,
    grad_clip: float,
    warmup_steps: int,
) -> None:
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    for name, value in (
        ("micro_batch_size", micro_batch_size),
        ("grad_accum_steps", grad_accum_steps),
        ("world_size", world_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if grad_clip < 0:
        raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {grad_clip!r}")
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")


if __name__ == "__main__":
    example = build_ds_config(
        zero_stage=2,
        micro_batch_size=4,
        grad_accum_steps=1,
        world_size=2,
        lr=1e-5,
        weight_decay=0.0,
        grad_clip=1.0,
        bf16=False,
        offload_optimizer=True,
        warmup_steps=10,
    )
    print(json.dumps(example, indent=2))
