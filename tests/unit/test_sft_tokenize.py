"""SFT label masking on the embedded model's tokenizer and chat template (no Ray, no DeepSpeed)."""

from __future__ import annotations

from typing import Any

import pytest

from rlaif.engines.base import Message
from rlaif.engines.models import EMBEDDED_MODEL, resolve_model
from rlaif.trainers.sft import IGNORE_INDEX, SFTExample, target_count, tokenize_sft_example

TWO_TURNS = SFTExample(
    id="chat-1",
    messages=(
        Message("user", "What is the capital of France?"),
        Message("assistant", "Paris is the capital of France."),
        Message("user", "And of Italy?"),
        Message("assistant", "Rome."),
    ),
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(EMBEDDED_MODEL))


def labelled_runs(input_ids: list[int], labels: list[int]) -> list[list[int]]:
    """Maximal runs of consecutive labelled positions, as token ids."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(input_ids, labels, strict=True):
        if label != IGNORE_INDEX:
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = label != IGNORE_INDEX
    return runs


def test_labels_cover_exactly_the_assistant_turns(tokenizer: Any) -> None:
    input_ids, labels = tokenize_sft_example(tokenizer, TWO_TURNS, max_len=1024)
    assert len(input_ids) == len(labels)
    # The whole conversation is there, tokenised as the chat template renders it.
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in TWO_TURNS.messages], tokenize=False
    )
    assert tokenizer.decode(input_ids) == rendered
    # Labels equal the inputs where set: the model predicts the very tokens it is shown.
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(input_ids, labels, strict=True))
    # Exactly two labelled runs: each assistant reply with its end-of-turn markup
    # (SmolLM2's template closes a turn with "<|im_end|>\n"), and nothing else: not the
    # system prompt, not the user turns, not the "<|im_start|>assistant\n" header.
    runs = [tokenizer.decode(run) for run in labelled_runs(input_ids, labels)]
    assert runs == ["Paris is the capital of France.<|im_end|>\n", "Rome.<|im_end|>\n"]


def test_user_and_system_text_is_never_a_target(tokenizer: Any) -> None:
    input_ids, labels = tokenize_sft_example(tokenizer, TWO_TURNS, max_len=1024)
    context = tokenizer.decode([t for t, label in zip(input_ids, labels, strict=True) if label == IGNORE_INDEX])
    assert "capital of France?" in context and "And of Italy?" in context
    assert "Paris" not in context and "Rome" not in context
    assert context.count("<|im_start|>assistant\n") == 2


def test_truncation_keeps_the_opening_tokens(tokenizer: Any) -> None:
    full_ids, full_labels = tokenize_sft_example(tokenizer, TWO_TURNS, max_len=1024)
    # Cut in the middle of the first reply: the prefix is unchanged and only its start is trained.
    first_target = next(i for i, label in enumerate(full_labels) if label != IGNORE_INDEX)
    cut = first_target + 3
    ids, labels = tokenize_sft_example(tokenizer, TWO_TURNS, max_len=cut)
    assert ids == full_ids[:cut] and labels == full_labels[:cut]
    assert sum(label != IGNORE_INDEX for label in labels) == 3


def test_truncation_before_any_reply_leaves_nothing_to_train(tokenizer: Any) -> None:
    ids, labels = tokenize_sft_example(tokenizer, TWO_TURNS, max_len=8)
    assert len(ids) == 8
    assert all(label == IGNORE_INDEX for label in labels)
    assert target_count(tokenize_sft_example(tokenizer, TWO_TURNS, max_len=8)) == 0


def test_target_count_skips_position_zero() -> None:
    # Position 0 is never predicted (nothing precedes it), so its label never counts.
    from rlaif.trainers.sft import TokenizedExample

    assert target_count(TokenizedExample([5, 6, 7], [5, IGNORE_INDEX, 7])) == 1


def test_examples_are_validated() -> None:
    with pytest.raises(ValueError, match="no assistant turn"):
        SFTExample("x", (Message("user", "hi"),))
    with pytest.raises(ValueError, match="opens with an assistant turn"):
        SFTExample("x", (Message("assistant", "hi"), Message("user", "ok")))
    # Plain (role, content) pairs are accepted and normalised to Message.
    example = SFTExample("x", (("user", "hi"), ("assistant", "hello")))  # type: ignore[arg-type]
    assert example.messages[1] == Message("assistant", "hello")
