"""Bucket plans for weight sync."""

import pytest

from rlaif.core.buckets import TensorMeta, plan_buckets


def test_buckets_respect_the_size_limit_and_keep_order() -> None:
    # 4-byte floats: sizes 40, 40, 40, 400 bytes; a 100-byte limit packs two small tensors per bucket.
    metas = [TensorMeta(f"t{i}", (n,), "float32") for i, n in enumerate([10, 10, 10, 100])]
    assert plan_buckets(metas, 100) == [[0, 1], [2], [3]]


def test_buckets_never_mix_dtypes() -> None:
    metas = [TensorMeta("a", (2,), "float32"), TensorMeta("b", (2,), "bfloat16"), TensorMeta("c", (2,), "float32")]
    assert plan_buckets(metas, 1 << 20) == [[0, 2], [1]]


def test_every_tensor_lands_in_exactly_one_bucket() -> None:
    metas = [TensorMeta(f"t{i}", (i + 1, 3), "float32") for i in range(50)]
    flat = sorted(i for b in plan_buckets(metas, 200) for i in b)
    assert flat == list(range(50))


def test_non_positive_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="bucket_bytes"):
        plan_buckets([], 0)
