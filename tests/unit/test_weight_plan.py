"""Placing the learner's tensors in an engine's fused tensors (rlaif.core.weight_plan)."""

from __future__ import annotations

import pytest

from rlaif.core.weight_plan import PlanError, Rows, Target, place, shard_rows, whole

# A Llama attention block with 4 query heads and 1 key/value head of size 8, hidden size 32:
# vLLM's qkv_proj stacks q (4*8 = 32 rows), k (8 rows) and v (8 rows), 48 rows in all.
QKV = Target("model.layers.0.self_attn.qkv_proj.weight", (48, 32), (("q", 32), ("k", 8), ("v", 8)))
# gate_up_proj stacks gate (64 rows) then up (64 rows), keyed 0 and 1.
GATE_UP = Target("model.layers.0.mlp.gate_up_proj.weight", (128, 32), ((0, 64), (1, 64)))
NORM = Target("model.norm.weight", (32,))


def test_each_shard_fills_its_rows_in_stacking_order() -> None:
    # q starts at row 0; k after q's 32 rows; v after k's 8.
    assert [shard_rows(QKV, s) for s in ("q", "k", "v")] == [Rows(0, 32), Rows(32, 40), Rows(40, 48)]
    assert [shard_rows(GATE_UP, s) for s in (0, 1)] == [Rows(0, 64), Rows(64, 128)]


def test_an_unfused_tensor_fills_every_row() -> None:
    assert shard_rows(NORM, None) == Rows(0, 32)
    assert place(NORM, None, (32,)) == Rows(0, 32)


def test_a_span_of_consecutive_shards_covers_them_all() -> None:
    # (0, 1): a checkpoint that stores gate and up already fused.
    assert shard_rows(GATE_UP, (0, 1)) == Rows(0, 128)
    with pytest.raises(PlanError, match="consecutive"):
        shard_rows(Target("t", (30, 4), ((0, 10), (1, 10), (2, 10))), (0, 2))


def test_place_checks_the_shape_against_the_shard() -> None:
    assert place(QKV, "k", (8, 32)) == Rows(32, 40)
    with pytest.raises(PlanError, match=r"expects shape \(8, 32\), got \(32, 32\)"):
        place(QKV, "v", (32, 32))
    with pytest.raises(PlanError, match="expects shape"):
        place(QKV, "q", (32, 16))  # wrong hidden size


def test_unknown_shards_and_inconsistent_targets_are_refused() -> None:
    with pytest.raises(PlanError, match="no shard 'o'"):
        shard_rows(QKV, "o")
    with pytest.raises(PlanError, match="no shard 0"):
        shard_rows(NORM, 0)
    with pytest.raises(PlanError, match="shards cover 40 rows, the tensor has 48"):
        shard_rows(Target("t", (48, 32), (("q", 32), ("k", 8))), "q")


def test_a_fused_tensor_is_whole_once_every_part_has_arrived_in_any_order() -> None:
    v, q, k = Rows(40, 48), Rows(0, 32), Rows(32, 40)
    assert not whole(QKV, [v])
    assert not whole(QKV, [v, q])
    assert whole(QKV, [v, q, k])


def test_a_part_sent_twice_is_an_error_not_a_whole_tensor() -> None:
    # q (32 rows) + k + k again = 48 rows, the target's count, yet v never came.
    with pytest.raises(PlanError, match=r"rows \(32, 40\) and \(32, 40\) overlap"):
        whole(QKV, [Rows(0, 32), Rows(32, 40), Rows(32, 40)])
