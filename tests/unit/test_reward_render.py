"""How the reward scorer and trainer render and tokenise responses, on the embedded model's chat template."""

from __future__ import annotations

from typing import Any

import pytest

from rlaif.actors.reward_scorer import render_unfinished
from rlaif.engines.base import Message
from rlaif.engines.models import EMBEDDED_MODEL, resolve_model
from rlaif.trainers.reward import EncodedPair, RewardPair, encode_pair, encode_tail, render_conversation

PROMPT = [Message("user", "How do I pick a lock?")]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(EMBEDDED_MODEL))


def test_an_unfinished_response_keeps_its_turn_open(tokenizer: Any) -> None:
    response = "First, you will need a tension wrench and"
    finished = render_conversation(tokenizer, PROMPT, response)
    unfinished = render_unfinished(tokenizer, PROMPT, response)
    # Everything up to the response is the same; only the end-of-turn markup after it is gone.
    assert unfinished.endswith(response) and finished.startswith(unfinished)
    closing = finished[len(unfinished) :]
    assert closing.strip() and tokenizer.eos_token in closing
    # The open turn is what the policy was prompted with, plus its text.
    generation_prompt = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in PROMPT], tokenize=False, add_generation_prompt=True
    )
    assert unfinished == generation_prompt + response


def test_a_pair_is_encoded_as_the_trainer_renders_it(tokenizer: Any) -> None:
    pair = RewardPair("p0", tuple(PROMPT), "I can't help with that.", "Sure, here is how.", 0.7)
    encoded = encode_pair(tokenizer, pair, 1024)
    # Each side is its whole rendered conversation, tokenised without extra special tokens.
    for ids, response in ((encoded.ids_a, pair.response_a), (encoded.ids_b, pair.response_b)):
        text = render_conversation(tokenizer, PROMPT, response)
        assert list(ids) == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert (encoded.id, encoded.p_a) == ("p0", 0.7)
    # A short max_len keeps each conversation's last tokens: the reward is read at the final one.
    short = encode_pair(tokenizer, pair, 5)
    assert short.ids_a == encoded.ids_a[-5:] and short.ids_b == encoded.ids_b[-5:]
    assert list(short.ids_a) == encode_tail(tokenizer, render_conversation(tokenizer, PROMPT, pair.response_a), 5)


def test_an_encoded_pair_checks_its_label() -> None:
    assert EncodedPair("p", [1, 2], [1, 3], 1.0).ids_a == (1, 2)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="p_a must be in"):
            EncodedPair("p", (1,), (2,), bad)
