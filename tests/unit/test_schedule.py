"""Cycled, reshuffled batches: counts, coverage per pass, determinism."""

import pytest

from rlaif.core.schedule import cycled_batches, pass_order


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
