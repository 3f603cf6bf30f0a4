"""`split_pairs`: where preference pairs are cut, and what the tensors hold."""

from __future__ import annotations

import pytest
import torch

from rlaif.core.shared_prefix import common_prefix_length, right_pad, split_pairs

PAD = 0


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([7], [8]) == 0


def test_pairs_are_cut_where_they_differ_and_each_continuation_keeps_a_token() -> None:
    pairs = [
        ([5, 6, 7, 8, 9], [5, 6, 7, 3]),  # differ after 3 shared tokens
        ([5, 6, 7], [5, 6, 7, 4, 4]),  # first is a prefix of the second: cut one earlier
        ([5, 6], [5, 6]),  # identical: both keep their last token
    ]
    split = split_pairs(pairs, PAD)
    assert split is not None
    assert split.prefix_ids.tolist() == [[5, 6, 7], [5, 6, PAD], [5, PAD, PAD]]
    assert split.prefix_mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert split.suffix_ids.tolist() == [
        [8, 9, PAD],
        [3, PAD, PAD],
        [7, PAD, PAD],
        [7, 4, 4],
        [6, PAD, PAD],
        [6, PAD, PAD],
    ]
    assert split.suffix_mask.sum(dim=1).tolist() == [2, 1, 1, 3, 1, 1]
    # Prefix + continuation gives back every sequence.
    for i, (a, b) in enumerate(pairs):
        prefix = split.prefix_ids[i][split.prefix_mask[i].bool()].tolist()
        for row, seq in ((2 * i, a), (2 * i + 1, b)):
            assert prefix + split.suffix_ids[row][split.suffix_mask[row].bool()].tolist() == seq


def test_a_pair_without_a_shared_token_means_no_split() -> None:
    assert split_pairs([([1, 2, 3], [1, 2, 4]), ([9, 2], [8, 2])], PAD) is None
    assert split_pairs([([1], [1, 2])], PAD) is None  # a one-token sequence has nothing to share
    assert split_pairs([], PAD) is None


def test_empty_sequences_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        split_pairs([([], [1])], PAD)


def test_right_pad() -> None:
    ids, mask = right_pad([[3, 4], [5]], PAD)
    assert torch.equal(ids, torch.tensor([[3, 4], [5, PAD]]))
    assert torch.equal(mask, torch.tensor([[1, 1], [1, 0]]))
