"""Cycled batches, reshuffled or in order: counts, coverage per pass, wrap-around, determinism."""

import pytest

from rlaif.core.schedule import cycled_batches, in_order_batch, pass_order


def test_each_pass_is_a_permutation_and_passes_differ() -> None:
    first, second = pass_order(10, seed=0, pass_index=0), pass_order(10, seed=0, pass_index=1)
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert first != second
    assert pass_order(10, seed=0, pass_index=0) == first  # a pure function of its arguments


def test_batches_run_across_passes_and_cover_every_item_once_per_pass() -> None:
    items = list("abcde")
    batches = cycled_batches(items, batch_size=2, steps=5, seed=3)  # 10 examples = exactly two passes
    assert [len(b) for b in batches] == [2] * 5
    flat = [x for b in batches for x in b]
    assert sorted(flat[:5]) == items and sorted(flat[5:]) == items
    assert cycled_batches(items, 2, 5, seed=3) == batches
    assert cycled_batches(items, 2, 5, seed=4) != batches
    # A resumed run that skips the first k batches sees the same later batches.
    assert cycled_batches(items, 2, 3, seed=3) == batches[:3]


def test_a_set_smaller_than_a_batch_repeats_and_bad_arguments_fail() -> None:
    (batch,) = cycled_batches(["x", "y"], batch_size=5, steps=1, seed=0)
    assert len(batch) == 5 and set(batch) == {"x", "y"}
    with pytest.raises(ValueError, match="no items"):
        cycled_batches([], 1, 1, 0)
    with pytest.raises(ValueError, match=">= 1"):
        cycled_batches(["x"], 0, 1, 0)


def test_in_order_batches_follow_the_items_and_wrap_around() -> None:
    items = list("abcde")
    # B = 2 over 5 items: batch k starts at item 2k mod 5, so batch 2 spans the end and the start.
    assert [in_order_batch(items, 2, k) for k in range(5)] == [
        ["a", "b"],
        ["c", "d"],
        ["e", "a"],
        ["b", "c"],
        ["d", "e"],
    ]
    # After len(items) batches the sequence repeats (10 items read = two whole passes).
    assert in_order_batch(items, 2, 5) == ["a", "b"]
    # A set smaller than a batch repeats within it, in order.
    assert in_order_batch(["x", "y"], 5, 0) == ["x", "y", "x", "y", "x"]
    assert in_order_batch(["x", "y"], 5, 1) == ["y", "x", "y", "x", "y"]


def test_in_order_batch_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no items"):
        in_order_batch([], 1, 0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        in_order_batch(["x"], 0, 0)
    with pytest.raises(ValueError, match="index >= 0"):
        in_order_batch(["x"], 1, -1)
