"""Where each tensor the learner sends lands in an inference engine's tensors (docs/design.md §5).

An engine may fuse several of the learner's tensors into one: vLLM keeps a single ``qkv_proj``
weight whose rows are the learner's ``q_proj``, ``k_proj`` and ``v_proj`` weights stacked in
that order, and one ``gate_up_proj`` for ``gate_proj`` and ``up_proj``. A sync that writes
straight into the engine's tensors needs, for each learner tensor, the rows of the engine
tensor it fills, and must know when a fused tensor is whole. This module computes and checks
that from names and shapes alone; the engine side (`rlaif.engines.vllm_weights`) supplies the
names and shapes and moves the bytes.

    qkv = Target("layers.0.qkv_proj.weight", (96, 32), (("q", 64), ("k", 16), ("v", 16)))
    place(qkv, "k", (16, 32))              # -> Rows(64, 80)
    whole(qkv, [Rows(0, 64), Rows(64, 80), Rows(80, 96)])   # -> True
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

# Names a shard of a fused tensor: vLLM uses "q"/"k"/"v" for attention and 0, 1, ... for merged MLPs;
# a tuple of consecutive keys names one span covering those shards.
ShardKey = str | int | tuple[int, ...]


class PlanError(ValueError):
    """A tensor cannot be placed in the engine directly (unknown name, wrong shape, unsupported layout)."""


class Target(NamedTuple):
    """One engine tensor a sync writes.

    ``shape`` is the engine tensor's full shape (rows first). ``shards`` lists a fused tensor's
    parts in row order as (key, rows); empty for a tensor filled by one learner tensor.
    """

    name: str
    shape: tuple[int, ...]
    shards: tuple[tuple[str | int, int], ...] = ()


class Rows(NamedTuple):
    """Rows [start, stop) of a target."""

    start: int
    stop: int


def shard_rows(target: Target, shard: ShardKey | None) -> Rows:
    """The rows of `target` that shard `shard` fills; None means the whole tensor.

    A tuple shard is a span of consecutive shards, e.g. (0, 1) of a gate/up pair is every row.
    """
    if shard is None:
        return Rows(0, target.shape[0])
    keys = shard if isinstance(shard, tuple) else (shard,)
    starts: dict[str | int, Rows] = {}
    start = 0
    for key, rows in target.shards:
        starts[key] = Rows(start, start + rows)
        start += rows
    if start != target.shape[0] and target.shards:
        raise PlanError(f"{target.name}: shards cover {start} rows, the tensor has {target.shape[0]}")
    missing = [k for k in keys if k not in starts]
    if missing or not keys:
        raise PlanError(f"{target.name} has no shard {shard!r} (shards: {[k for k, _ in target.shards]})")
    spans = [starts[k] for k in keys]
    if any(a.stop != b.start for a, b in pairwise(spans)):
        raise PlanError(f"{target.name}: shard span {shard!r} is not a run of consecutive shards")
    return Rows(spans[0].start, spans[-1].stop)


def place(target: Target, shard: ShardKey | None, shape: Sequence[int]) -> Rows:
    """The rows a learner tensor of `shape` fills in `target`; raises `PlanError` if it does not fit.

    The learner tensor must have the target's trailing dimensions and exactly the shard's rows.
    """
    rows = shard_rows(target, shard)
    want = (rows.stop - rows.start, *target.shape[1:])
    if tuple(shape) != want:
        raise PlanError(f"{target.name} shard {shard!r}: expects shape {want}, got {tuple(shape)}")
    return rows


def whole(target: Target, parts: Sequence[Rows]) -> bool:
    """Whether `parts` fill every row of `target` exactly once; False while rows are still missing.

    Raises `PlanError` when two parts overlap (a tensor sent twice in one sync): the row count
    could then add up with rows still missing.
    """
    ordered = sorted(parts)
    for prev, cur in pairwise(ordered):
        if cur.start < prev.stop:
            raise PlanError(f"{target.name}: rows {tuple(prev)} and {tuple(cur)} overlap")
    return sum(p.stop - p.start for p in ordered) == target.shape[0]
