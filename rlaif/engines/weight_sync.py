"""Weight sync over a broadcast group that spans the learner's rank 0 and the rollout engines.

The group is built directly on a TCP store (``ProcessGroupGloo`` on CPU, NCCL on GPU),
outside torch.distributed's default group: the learner already has DeepSpeed's default
group and an in-process vLLM engine has its own. Tensors travel in flat, single-dtype
buckets (`rlaif.core.buckets`); both ends derive the same bucket plan from the same
metadata, which the driver hands to the receivers once.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist

from rlaif.core.buckets import TensorMeta, plan_buckets

# How long a member waits for the others (rendezvous, each broadcast) before it raises instead of hanging.
TIMEOUT_S = 600


class SyncStats(NamedTuple):
    bytes: int
    seconds: float
    buckets: int


class SyncGroup:
    """One member of a broadcast group; rank 0 is the learner."""

    def __init__(
        self,
        master_addr: str,
        master_port: int,
        rank: int,
        world_size: int,
        backend: str = "gloo",
        timeout_s: int = TIMEOUT_S,
    ) -> None:
        timeout = datetime.timedelta(seconds=timeout_s)
        self.store = dist.TCPStore(master_addr, master_port, world_size, rank == 0, timeout=timeout)
        self.rank, self.world_size = rank, world_size
        self.device = torch.device("cuda" if backend == "nccl" else "cpu")
        if backend == "gloo":
            self.pg: dist.ProcessGroup = dist.ProcessGroupGloo(self.store, rank, world_size, timeout)
        elif backend == "nccl":
            self.pg = dist.ProcessGroupNCCL(self.store, rank, world_size)
        else:
            raise ValueError(f"weight sync backend must be 'gloo' or 'nccl', got {backend!r}")

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        self.pg.broadcast(tensor, src).wait()


def tensor_metas(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[TensorMeta]:
    return [TensorMeta(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in named_tensors]


def send_state(
    group: SyncGroup, tensors: Sequence[torch.Tensor], metas: Sequence[TensorMeta], bucket_bytes: int
) -> SyncStats:
    """Rank 0: broadcast `tensors` (in `metas` order) bucket by bucket."""
    start, sent = time.perf_counter(), 0
    plan = plan_buckets(metas, bucket_bytes)
    for bucket in plan:
        flat = torch.cat([tensors[i].detach().reshape(-1).to(group.device) for i in bucket])
        group.broadcast(flat)
        sent += flat.numel() * flat.element_size()
    return SyncStats(sent, time.perf_counter() - start, len(plan))


def receive_state(
    group: SyncGroup, metas: Sequence[TensorMeta], bucket_bytes: int
) -> tuple[list[tuple[str, torch.Tensor]], SyncStats]:
    """Other ranks: receive every bucket and cut it back into named tensors."""
    start, received = time.perf_counter(), 0
    plan = plan_buckets(metas, bucket_bytes)
    out: list[tuple[str, torch.Tensor]] = []
    for bucket in plan:
        dtype = getattr(torch, metas[bucket[0]].dtype)
        flat = torch.empty(sum(metas[i].numel for i in bucket), dtype=dtype, device=group.device)
        group.broadcast(flat)
        received += flat.numel() * flat.element_size()
        offset = 0
        for i in bucket:
            m = metas[i]
            out.append((m.name, flat[offset : offset + m.numel].view(m.shape)))
            offset += m.numel
    return out, SyncStats(received, time.perf_counter() - start, len(plan))
