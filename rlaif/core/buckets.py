"""Bucketing a model's tensors for weight sync (docs/design.md §5).

Both ends of a broadcast compute the same plan from the same tensor metadata, so only
the flat buckets travel: one collective per bucket instead of one per tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "uint8": 1, "bool": 1}


@dataclass(frozen=True)
class TensorMeta:
    """Name, shape and dtype (torch's name without the ``torch.`` prefix) of one tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * _BYTES[self.dtype]


def plan_buckets(metas: Sequence[TensorMeta], bucket_bytes: int) -> list[list[int]]:
    """Group tensor indices into buckets of one dtype and at most `bucket_bytes` each.

    Order is kept within a dtype; a tensor larger than the limit gets a bucket of its own.
    """
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    buckets: list[list[int]] = []
    open_bucket: dict[str, tuple[list[int], int]] = {}
    for i, meta in enumerate(metas):
        current, size = open_bucket.get(meta.dtype, ([], 0))
        if current and size + meta.nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        open_bucket[meta.dtype] = (current, size + meta.nbytes)
    buckets.extend(b for b, _ in open_bucket.values() if b)
    return buckets
