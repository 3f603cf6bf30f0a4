"""A reward model that encodes each pair's shared prefix once gives the rewards and gradients
of two full forward passes (`rlaif.core.shared_prefix`, `RewardModel.forward(..., prefix_ids=...)`)."""

from __future__ import annotations

from pathlib import Path

import torch

from rlaif.core.losses import bradley_terry_loss
from rlaif.core.shared_prefix import right_pad, split_pairs
from rlaif.engines.base import Message
from rlaif.trainers.reward import RewardModel, encode_tail, render_conversation


def test_shared_prefix_rewards_and_gradients_match_full_sequences(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    pad = tokenizer.pad_token_id
    model = RewardModel.from_pretrained(str(tiny_model), pad, torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(std=0.5)  # a zero head would make every reward 0 and hide a mismatch
    model.train()
    # Prompts and responses of different lengths, so prefixes and continuations are padded
    # differently and the continuations' position ids must skip the prefix padding.
    prompts = ["Hi.", "How do I bake bread at home without yeast?", "Name a river in France, please."]
    responses = [
        ("Hello there!", "Hi."),
        ("Use baking soda and buttermilk, then bake it hot.", "Flatbread needs no yeast at all."),
        ("The Loire.", "The Loire is the longest river in France."),
    ]
    a = [
        encode_tail(tokenizer, render_conversation(tokenizer, (Message("user", q),), r[0]), 512)
        for q, r in zip(prompts, responses, strict=True)
    ]
    b = [
        encode_tail(tokenizer, render_conversation(tokenizer, (Message("user", q),), r[1]), 512)
        for q, r in zip(prompts, responses, strict=True)
    ]
    split = split_pairs(list(zip(a, b, strict=True)), pad)
    assert split is not None
    assert split.prefix_mask.sum() > 0.4 * (sum(map(len, a + b)) / 2)  # the prompts are shared
    p_a = torch.tensor([0.9, 0.2, 0.6])

    def rewards_and_grads(full: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        if full:
            ids, mask = right_pad(a + b, pad)
            r = model(ids, mask)
            r_a, r_b = r[:3], r[3:]
        else:
            r = model(split.suffix_ids, split.suffix_mask, split.prefix_ids, split.prefix_mask)
            r_a, r_b = r[0::2], r[1::2]
        bradley_terry_loss(r_a, r_b, p_a).backward()
        grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}
        return r_a.detach(), r_b.detach(), grads

    full_a, full_b, full_grads = rewards_and_grads(full=True)
    shared_a, shared_b, shared_grads = rewards_and_grads(full=False)
    assert full_a.abs().max() > 1e-3  # the rewards are not trivially equal
    torch.testing.assert_close(shared_a, full_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shared_b, full_b, rtol=1e-4, atol=1e-5)
    assert full_grads.keys() == shared_grads.keys()
    for name, grad in full_grads.items():
        # float32 sums in another order: compare whole tensors, not entries near zero one by one.
        error = (shared_grads[name] - grad).norm() / grad.norm().clamp(min=1e-12)
        assert error < 1e-4, f"{name}: relative gradient error {error:.2e}"
