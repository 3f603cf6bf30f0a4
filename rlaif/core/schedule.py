"""Training schedules over small datasets: a fixed number of steps filled by cycling passes.

A trainer that must take `steps` optimizer steps of `batch_size` examples from a set
smaller than ``steps x batch_size`` reads it in passes, each in a fresh order
(`cycled_batches`), or in the set's own order (`in_order_batch`, for a user's file
read as given). Either is a pure function of the batch index (and seed), so a resumed
run that skips its first k batches sees exactly the batches the killed run would have
seen next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def pass_order(n: int, seed: int, pass_index: int) -> list[int]:
    """A permutation of ``range(n)`` for one pass, from sha256 keys (stable across Python versions)."""
    return sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{pass_index}:{i}".encode()).digest())


def cycled_batches(items: Sequence[T], batch_size: int, steps: int, seed: int) -> list[list[T]]:
    """`steps` batches of `batch_size` items, read from back-to-back reshuffled passes over `items`.

    Batches run across pass boundaries, so nothing is dropped and every item is
    seen once per ``len(items)`` examples; a set smaller than one batch repeats
    within a batch.

    Raises:
        ValueError: if `items` is empty or `batch_size` / `steps` is below 1.
    """
    if not items:
        raise ValueError("cannot build batches from no items")
    if batch_size < 1 or steps < 1:
        raise ValueError(f"batch_size and steps must be >= 1, got {batch_size}, {steps}")
    needed = batch_size * steps
    stream: list[T] = []
    pass_index = 0
    while len(stream) < needed:
        stream.extend(items[i] for i in pass_order(len(items), seed, pass_index))
        pass_index += 1
    return [stream[s * batch_size : (s + 1) * batch_size] for s in range(steps)]


def in_order_batch(items: Sequence[T], batch_size: int, index: int) -> list[T]:
    """Batch `index` of `items` read in their own order: items ``[index*B, (index+1)*B)``, modulo ``len(items)``.

    The read wraps around to the first item when the set runs out, so a batch may span the
    end and the start (with 5 items and B = 2, batch 2 is items 4 and 0); a set smaller than
    one batch repeats within a batch.

    Raises:
        ValueError: if `items` is empty, `batch_size` is below 1 or `index` below 0.
    """
    if not items:
        raise ValueError("cannot build batches from no items")
    if batch_size < 1 or index < 0:
        raise ValueError(f"batch_size must be >= 1 and index >= 0, got {batch_size}, {index}")
    start = index * batch_size
    return [items[(start + k) % len(items)] for k in range(batch_size)]
