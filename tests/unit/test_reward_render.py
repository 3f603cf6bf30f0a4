"""How the reward scorer renders finished and unfinished responses, on the embedded model's chat template."""

from __future__ import annotations

from typing import Any

import pytest

from rlaif.actors.reward_scorer import render_unfinished
from rlaif.engines.base import Message
from rlaif.engines.models import EMBEDDED_MODEL, resolve_model
from rlaif.trainers.reward import render_conversation

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
