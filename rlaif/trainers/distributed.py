"""One rank's distributed plumbing: process group, collectives, DeepSpeed engine, saving.

The trainers (`rlaif.trainers.sft`, `rlaif.trainers.reward`) are each one
DeepSpeed rank; what they share lives here as plain functions:

- `init_process_group(...)` joins the group (gloo on CPU, nccl on GPU) through
  `deepspeed.init_distributed`, idempotently, without DeepSpeed's shared-memory
  collectives op, which nothing here uses (`skip_shm_comm_op`); `find_free_port()`
  picks a port for rank 0 to listen on.
- `all_reduce_sums(...)` / `all_reduce_max(...)` for global token counts and metrics.
- `create_engine(...)` wraps a model in a DeepSpeed engine from a config dict made
  by `rlaif.trainers.ds_config.build_ds_config`.
- `save_hf_folder(...)` writes a Hugging Face folder (safetensors + tokenizer) from
  any ZeRO stage: under ZeRO-3 it gathers each parameter in turn, so no rank ever
  holds more than one whole tensor beyond rank 0's copy; only rank 0 writes, into a
  temporary sibling folder that is then renamed into place (atomic: a reader sees
  the old folder or the new one, never half of one).
- `save_engine_checkpoint(...)` / `load_engine_checkpoint(...)` resume training.

Every function that communicates must be called by all ranks, in the same order.
Paths are on a filesystem that all ranks share (one machine, or a shared mount).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

_CHECKPOINT_STEP_KEY = "rlaif_step"

T = TypeVar("T")


def default_backend() -> str:
    """``nccl`` where CUDA is available, else ``gloo``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def find_free_port() -> int:
    """A TCP port that is free on this machine right now (the OS picks it).

    Another process could take it before rank 0 binds it; the window is short
    and a clash fails loudly at rendezvous, so callers do not retry.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def init_process_group(
    rank: int,
    world_size: int,
    master_addr: str,
    master_port: int,
    backend: str,
    local_rank: int = 0,
    timeout_s: float = 1800.0,
) -> None:
    """Join the default process group as `rank` of `world_size`; a no-op if already joined.

    The rendezvous is torch's ``env://``: the variables are set here so that
    DeepSpeed, which reads them too, agrees with the arguments. `local_rank` is
    the device index on this machine; 0 under Ray, which shows each actor only
    its own GPU.

    Raises:
        ValueError: bad arguments.
        RuntimeError: already in a group of another size or rank.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if dist.is_initialized():
        if dist.get_rank() != rank or dist.get_world_size() != world_size:
            raise RuntimeError(
                f"this process is already rank {dist.get_rank()} of {dist.get_world_size()}, "
                f"cannot become rank {rank} of {world_size}"
            )
        return
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(local_rank),
            "MASTER_ADDR": master_addr,
            "MASTER_PORT": str(master_port),
        }
    )
    import deepspeed

    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    else:
        skip_shm_comm_op()
    deepspeed.init_distributed(
        dist_backend=backend,
        auto_mpi_discovery=False,
        distributed_port=master_port,
        verbose=False,
        timeout=timedelta(seconds=timeout_s),
        rank=rank,
        world_size=world_size,
    )


# DeepSpeed's op of shared-memory collectives for CPU ranks (deepspeed/ops/op_builder/cpu/comm.py).
SHM_COMM_OP = "deepspeed_shm_comm"


def skip_shm_comm_op() -> None:
    """Keep `deepspeed.init_distributed` from compiling and loading DeepSpeed's shared-memory collectives.

    On a CPU accelerator, DeepSpeed 0.19's torch backend builds the ``deepspeed_shm_comm`` op
    when it starts (``build_shm_op`` in deepspeed/comm/torch.py): a JIT compile of about a
    minute in a fresh environment, and a load on every rank after that. The op serves only
    ``deepspeed.comm.inference_all_reduce``, which only DeepSpeed's tensor-parallel layers
    (deepspeed/module_inject) call; rlaif's ranks are data parallel (ZeRO), and their
    collectives, DeepSpeed's and ours, are torch.distributed's over gloo, with or without the op.

    DeepSpeed has no setting for this (``DS_BUILD_SHM_COMM`` governs pre-building at install
    only); ``build_shm_op`` skips the op when ``deepspeed.ops.__compatible_ops__``, the
    per-process table of which ops this machine can build, marks it incompatible. The table
    is probed once and cached in the module, so the mark made here is the one it reads.
    This process's ranks then run without the op; nothing else is changed (docs/design.md §7).
    """
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible[SHM_COMM_OP] = False
    else:
        log.warning("deepspeed.ops has no table of compatible ops; DeepSpeed may build %s", SHM_COMM_OP)


def comm_device() -> torch.device:
    """Where tensors for collectives must live: the GPU under nccl, the CPU under gloo."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sums(values: Sequence[float]) -> list[float]:
    """Element-wise sums of `values` over all ranks (float64, so token counts stay exact)."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=comm_device())
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def all_reduce_max(value: int) -> int:
    """The largest `value` over all ranks."""
    tensor = torch.tensor([value], dtype=torch.int64, device=comm_device())
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def lockstep_chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` in chunks of `size`, then empty chunks up to the most chunks any rank has.

    Under ZeRO-3 every forward pass gathers parameters collectively, so ranks with
    shards of different lengths must still run the same number of passes; callers
    run a throw-away pass for each empty chunk.
    """
    chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
    total = all_reduce_max(len(chunks))
    return chunks + [[] for _ in range(total - len(chunks))]


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def create_engine(model: torch.nn.Module, ds_config: dict[str, Any]) -> Any:
    """Wrap `model` in a DeepSpeed engine whose optimizer and scheduler come from `ds_config`.

    The process group must already exist (`init_process_group`). DeepSpeed
    broadcasts rank 0's weights at start, so every rank begins from the same model.
    """
    import deepspeed

    from rlaif.trainers.ds_config import CPU_ADAM_KEY

    params = [p for p in model.parameters() if p.requires_grad]
    if CPU_ADAM_KEY not in ds_config:
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=ds_config)
        return engine
    # One fp32 rank: ZeRO stage 0 with DeepSpeedCPUAdam given as the engine's optimizer (ds_config's docstring).
    config = {k: v for k, v in ds_config.items() if k != CPU_ADAM_KEY}
    adam = ds_config[CPU_ADAM_KEY]
    optimizer = _clipping_cpu_adam(
        params, adam["grad_clip"], adam["lr"], tuple(adam["betas"]), adam["eps"], adam["weight_decay"]
    )
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, optimizer=optimizer, config=config)
    return engine


def _clipping_cpu_adam(
    params: list[torch.nn.Parameter], max_norm: float, lr: float, betas: tuple[float, float], eps: float, wd: float
) -> Any:
    """DeepSpeedCPUAdam (AdamW mode) that first clips the global gradient norm to `max_norm` (0: no clipping)
    and keeps the norm before clipping in ``_global_grad_norm``, where DeepSpeed's engine reads it
    (`engine.get_global_grad_norm()`), as ZeRO's optimizer does."""
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    class ClippingCPUAdam(DeepSpeedCPUAdam):  # type: ignore[misc]
        @torch.no_grad()
        def step(self, closure: Any = None) -> Any:
            grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads)
            if max_norm > 0:
                torch.nn.utils.clip_grads_with_norm_(
                    [p for group in self.param_groups for p in group["params"]], max_norm, norm
                )
            self._global_grad_norm = float(norm)
            return super().step(closure)

    return ClippingCPUAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd, adamw_mode=True)


def zero_stage(engine: Any) -> int:
    return int(engine.zero_optimization_stage())


def grad_norm(engine: Any) -> float:
    """The global gradient norm of the last optimizer step, before clipping (NaN if unknown)."""
    norm = engine.get_global_grad_norm()
    return float(norm) if norm is not None else float("nan")


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its eos id (padded positions are masked out either way)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token to pad batches with")
    return int(pad)


def full_state_dict(module: torch.nn.Module, stage: int, rank: int) -> dict[str, torch.Tensor] | None:
    """The whole model's tensors, on CPU, on rank 0; ``None`` on other ranks.

    Under ZeRO-3 each parameter is gathered from its shards in turn (all ranks
    take part, in the same order). Tied parameters appear once, under their first
    name, which is what safetensors needs and what `from_pretrained` re-ties.
    """
    state: dict[str, torch.Tensor] = {}
    for name, param in module.named_parameters():
        if stage == 3 and hasattr(param, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                if rank == 0:
                    state[name] = param.detach().to("cpu", copy=True)
        elif rank == 0:
            state[name] = param.detach().to("cpu", copy=True)
    if rank != 0:
        return None
    # state_dict() holds persistent buffers only (rotary tables and the like are rebuilt on load).
    buffer_names = {n for n, _ in module.named_buffers()}
    for name, buf in module.state_dict(keep_vars=True).items():
        if name in buffer_names and name not in state:
            state[name] = buf.detach().to("cpu", copy=True)
    return state


def save_hf_folder(module: Any, tokenizer: Any, path: str | Path, stage: int, rank: int) -> None:
    """Write `module` (a transformers `PreTrainedModel`) and `tokenizer` as a Hugging Face folder.

    All ranks must call this. Rank 0 writes ``<path>`` atomically; the others
    wait at a barrier until it is in place.
    """
    target = Path(path)
    state = full_state_dict(module, stage, rank)
    if rank == 0:
        assert state is not None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is for other users and tools too
        try:
            module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            _replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("saved a Hugging Face folder to %s", target)
    barrier()


def _replace_dir(src: Path, dst: Path) -> None:
    """Move folder `src` to `dst`, replacing an existing `dst` with at most a moment of absence."""
    if not dst.exists():
        os.replace(src, dst)
        return
    # rename() cannot replace a non-empty directory: move the old one aside first.
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def save_engine_checkpoint(engine: Any, directory: str | Path, step: int) -> None:
    """Save the DeepSpeed engine's full training state (weights, optimizer, scheduler) under `directory`.

    All ranks call this; each writes its own shards, tagged ``step<N>``; the
    ``latest`` file names the newest tag.
    """
    engine.save_checkpoint(str(directory), tag=f"step{step}", client_state={_CHECKPOINT_STEP_KEY: step})


def load_engine_checkpoint(engine: Any, directory: str | Path) -> int:
    """Restore the newest checkpoint under `directory` into `engine`; return its optimizer step.

    Raises:
        FileNotFoundError: no checkpoint there.
    """
    load_path, client_state = engine.load_checkpoint(str(directory))
    if load_path is None:
        raise FileNotFoundError(f"no DeepSpeed checkpoint under {directory} (no 'latest' tag file)")
    return int(client_state.get(_CHECKPOINT_STEP_KEY, 0))
