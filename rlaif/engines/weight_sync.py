"""Weight sync over a broadcast group that spans the learner's rank 0 and the rollout engines.

The group is built directly on a TCP store (``ProcessGroupGloo`` on CPU, NCCL on GPU),
outside torch.distributed's default group: the learner already has DeepSpeed's default
group and an in-process vLLM engine has its own. Tensors travel in flat, single-dtype
buckets (`rlaif.core.buckets`); both ends derive the same bucket plan from the same
metadata, which the driver hands to the receivers once.

On one node over gloo the bulk bytes skip the sockets: rank 0 writes each bucket into a
shared-memory file (a memfd) that the engines map, and the broadcast carries only the
bucket's place in it. Loopback TCP moved 538 MB in 1.2-1.5 s here; the copy into the
memfd takes a tenth of that and the engines read it in place. The group takes this path
when every member can open rank 0's memfd (same node, same user) and broadcasts the bytes
otherwise; `SyncGroup.shared_memory` says which.
"""

from __future__ import annotations

import datetime
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist

from rlaif.core.buckets import TensorMeta, plan_buckets

# How long a member waits for the others (rendezvous, each broadcast) before it raises instead of hanging.
TIMEOUT_S = 600
# Buckets start at multiples of this in the shared-memory file (any dtype's alignment; cache lines).
_ALIGN = 64
# The memfd grows in steps of this, so a first push does not remap it bucket by bucket.
_GROW_BYTES = 64 << 20


class SyncStats(NamedTuple):
    """One member's side of a transfer. ``path`` (receivers): how the engine took the weights in."""

    bytes: int
    seconds: float
    buckets: int
    path: str = ""


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
        shared_memory: bool = True,
    ) -> None:
        """Join the group; blocks until all members have. `shared_memory` (read on rank 0) allows
        the same-node shared-memory path; False always broadcasts the bytes."""
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
        self.area: SharedArea | None = None
        if backend == "gloo" and world_size > 1:
            self.area = _agree_on_shared_area(self.store, rank, world_size, shared_memory)
        self._cursor = _ALIGN

    @property
    def shared_memory(self) -> bool:
        """Whether buckets travel through rank 0's shared-memory file rather than the sockets."""
        return self.area is not None

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        self.pg.broadcast(tensor, src).wait()

    def send_bucket(self, tensors: Sequence[torch.Tensor], first: bool) -> int:
        """Rank 0: one bucket's tensors to every member; returns the bytes sent."""
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        if self.area is None:
            self.broadcast(torch.cat([t.detach().reshape(-1).to(self.device) for t in tensors]))
            return nbytes
        if first:
            self._cursor = _ALIGN
        offset = self._cursor
        region = self.area.map(offset + nbytes)[offset : offset + nbytes]
        at = 0
        for t in tensors:
            n = t.numel() * t.element_size()
            region[at : at + n].view(t.dtype).copy_(t.detach().reshape(-1))
            at += n
        self._cursor = _round_up(offset + nbytes, _ALIGN)
        # The broadcast orders the reads after the writes: members wait on it before they look.
        self.broadcast(torch.tensor([offset, nbytes], dtype=torch.int64))
        return nbytes

    def receive_bucket(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """Other ranks: the next bucket as one flat tensor (a view of the shared file where there is one)."""
        if self.area is None:
            flat = torch.empty(numel, dtype=dtype, device=self.device)
            self.broadcast(flat)
            return flat
        place = torch.empty(2, dtype=torch.int64)
        self.broadcast(place)
        offset, nbytes = place.tolist()
        expected = numel * dtype.itemsize
        if nbytes != expected:
            raise RuntimeError(f"weight sync: rank 0 sent a bucket of {nbytes} bytes, this member expects {expected}")
        return self.area.map(offset + nbytes)[offset : offset + nbytes].view(dtype)


class SharedArea:
    """Rank 0's memfd, mapped by every member through ``/proc/<pid>/fd/<fd>``.

    The file lives as long as rank 0 keeps it open or anyone keeps it mapped: nothing is
    left in /dev/shm when a process dies.
    """

    def __init__(self, path: str, fd: int | None) -> None:
        self.path, self.fd = path, fd  # fd: rank 0 only, which sizes the file
        self._mapped: torch.Tensor | None = None

    def map(self, size: int) -> torch.Tensor:
        """The first `size` (or more) bytes of the file, as a uint8 tensor sharing its pages."""
        if self._mapped is None or self._mapped.numel() < size:
            if self.fd is not None:
                size = _round_up(size, _GROW_BYTES)
                os.ftruncate(self.fd, size)
            else:
                size = os.stat(self.path).st_size
            # Views of an earlier, smaller mapping stay valid: they share the same pages.
            self._mapped = torch.from_file(self.path, shared=True, size=size, dtype=torch.uint8)
        return self._mapped

    def __del__(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _agree_on_shared_area(store: dist.Store, rank: int, world_size: int, wanted: bool) -> SharedArea | None:
    """Rank 0 offers a memfd; the group uses it only if every member can open it."""
    if rank == 0:
        fd = os.memfd_create("rlaif-weight-sync") if wanted and hasattr(os, "memfd_create") else None
        token = uuid.uuid4().hex.encode()
        path = f"/proc/{os.getpid()}/fd/{fd}" if fd is not None else ""
        if fd is not None:
            os.write(fd, token)
        store.set("shm/path", path)
        store.set("shm/token", token)
        usable = fd is not None and all(store.get(f"shm/ok/{r}") == b"1" for r in range(1, world_size))
        store.set("shm/use", b"1" if usable else b"0")
        if fd is not None and not usable:
            os.close(fd)
        return SharedArea(path, fd) if usable else None
    path, token = store.get("shm/path").decode(), store.get("shm/token")
    try:
        with open(path, "rb") as f:  # another node has no such file, or another process under that pid
            ok = f.read(len(token)) == token
    except OSError:
        ok = False
    store.set(f"shm/ok/{rank}", b"1" if ok else b"0")
    return SharedArea(path, None) if store.get("shm/use") == b"1" else None


def tensor_metas(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[TensorMeta]:
    return [TensorMeta(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in named_tensors]


def send_state(
    group: SyncGroup,
    tensors: Sequence[torch.Tensor],
    metas: Sequence[TensorMeta],
    bucket_bytes: int,
    first: bool = True,
) -> SyncStats:
    """Rank 0: send `tensors` (in `metas` order) bucket by bucket.

    `first` starts a new transfer; False continues the current one (the learner calls this
    once per gathered bucket, and the engines read the whole transfer before they load it).
    """
    start, sent = time.perf_counter(), 0
    plan = plan_buckets(metas, bucket_bytes)
    for k, bucket in enumerate(plan):
        sent += group.send_bucket([tensors[i] for i in bucket], first and k == 0)
    return SyncStats(sent, time.perf_counter() - start, len(plan))


class ReceivedState:
    """Other ranks: one transfer's tensors, named, yielded as each bucket arrives (iterate once).

    An engine that loads the tensors while iterating overlaps its load with rank 0's sending of
    the later buckets. Every bucket must be received whatever the consumer does, or the group
    falls out of step: `drain` receives whatever was not iterated. `stats` is set once the last
    bucket has arrived. The tensors are views of the shared-memory file (or of each received
    bucket) and stay valid until the next transfer starts.
    """

    def __init__(self, group: SyncGroup, metas: Sequence[TensorMeta], bucket_bytes: int) -> None:
        self.group, self.metas = group, metas
        self.plan = plan_buckets(metas, bucket_bytes)
        self.stats: SyncStats | None = None if self.plan else SyncStats(0, 0.0, 0)
        self._started, self._received, self._next = time.perf_counter(), 0, 0
        self._broken = False

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        while self._next < len(self.plan):
            yield from self._receive_next()

    def drain(self) -> None:
        """Receive (and drop) the buckets not iterated yet; nothing if the transport itself failed."""
        while self._next < len(self.plan) and not self._broken:
            self._receive_next()

    def _receive_next(self) -> list[tuple[str, torch.Tensor]]:
        bucket = self.plan[self._next]
        dtype = getattr(torch, self.metas[bucket[0]].dtype)
        try:
            flat = self.group.receive_bucket(sum(self.metas[i].numel for i in bucket), dtype)
        except Exception:
            self._broken = True  # a timed-out or dead group: draining would only wait out the timeout again
            raise
        self._next += 1
        self._received += flat.numel() * flat.element_size()
        out, offset = [], 0
        for i in bucket:
            m = self.metas[i]
            out.append((m.name, flat[offset : offset + m.numel].view(m.shape)))
            offset += m.numel
        if self._next == len(self.plan):
            self.stats = SyncStats(self._received, time.perf_counter() - self._started, len(self.plan))
        return out


def receive_state(
    group: SyncGroup, metas: Sequence[TensorMeta], bucket_bytes: int
) -> tuple[list[tuple[str, torch.Tensor]], SyncStats]:
    """Other ranks: receive every bucket and cut it back into named tensors."""
    received = ReceivedState(group, metas, bucket_bytes)
    named = list(received)
    assert received.stats is not None
    return named, received.stats
