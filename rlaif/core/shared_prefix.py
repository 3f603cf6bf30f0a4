"""Preference pairs as one shared prefix and two continuations, so the prefix is encoded once.

A reward-model batch holds both responses to each prompt. Rendered, the two
conversations share every token up to the first one where the responses differ:
the system prompt, the user's turn and the assistant header, often half the
sequence or more. `split_pairs` cuts each pair there; the model runs the
prefixes once, repeats their key/value cache for the two continuations and runs
those after it (`rlaif.trainers.reward.RewardModel`). Attention over the cache
gives every continuation token exactly the context it has in the full sequence,
so rewards and gradients are those of the two full forward passes, computed on
fewer tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class PrefixPairs(NamedTuple):
    """Right-padded token tensors of `n` pairs cut at their shared prefix.

    prefix_ids, prefix_mask: (n, prefix_len), pair i's shared tokens in row i.
    suffix_ids, suffix_mask: (2n, suffix_len), pair i's first sequence after the prefix in
        row 2i, its second in row 2i + 1; every row has at least one real token.
    """

    prefix_ids: torch.Tensor
    prefix_mask: torch.Tensor
    suffix_ids: torch.Tensor
    suffix_mask: torch.Tensor


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def split_pairs(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> PrefixPairs | None:
    """Cut each (first, second) token sequence pair at the tokens both start with.

    The cut leaves each continuation at least one token (its last token is where the
    reward is read). Returns None when some pair shares no leading token: its prefix
    row would be all padding, and then the caller runs the sequences whole.
    """
    if not pairs:
        return None
    cuts = []
    for a, b in pairs:
        if not a or not b:
            raise ValueError("split_pairs: empty token sequence")
        cut = min(common_prefix_length(a, b), len(a) - 1, len(b) - 1)
        if cut < 1:
            return None
        cuts.append(cut)
    prefix_ids, prefix_mask = right_pad([a[:cut] for (a, _), cut in zip(pairs, cuts, strict=True)], pad_id)
    suffixes = [seq[cut:] for (a, b), cut in zip(pairs, cuts, strict=True) for seq in (a, b)]
    suffix_ids, suffix_mask = right_pad(suffixes, pad_id)
    return PrefixPairs(prefix_ids, prefix_mask, suffix_ids, suffix_mask)


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(len(seqs), longest) token ids and attention mask (1 on real tokens), padded on the right."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
