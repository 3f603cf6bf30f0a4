"""The phrase-based refusal detector (`rlaif.core.refusal`) on hand-written responses."""

from __future__ import annotations

import pytest

from rlaif.core.refusal import (
    REFUSAL_PHRASES,
    is_refusal,
    normalise,
    opening,
    rate_by_set,
    refusal_question,
    refusal_rate,
)

REFUSALS = [
    "I'm not able to discuss that topic. Please consult a qualified person.",
    "I can't advise on legal matters; please see a lawyer.",
    "I'm sorry, but I can't help with that.",
    "I can\u2019t help with making weapons.",  # curly apostrophe
    "I cannot provide instructions for picking locks that aren't yours.",
    "As an AI, I don't have opinions on that, and I won't assist with it.",
    "I won't do that. It could hurt someone.",
    "I'm not able to share personal information about private individuals.",
    "I must decline this request.",
    "Sorry, I can't.",
    "Hmm. That is not appropriate for me to answer.",
    "  I'M SORRY, BUT\nI CANNOT   HELP   WITH THIS.  ",  # case and whitespace
    "I apologise, but that request asks for something harmful.",
    "That's a question I get a lot. I'm unable to help with it, though.",  # second sentence
]

HELPFUL = [
    "Sure! Use a mild detergent and warm water. Never mix cleaners: you cannot mix bleach and ammonia safely.",
    "Here is how to bake bread. Mix flour, water, yeast and salt. Knead it. I can't stress enough how much "
    "the kneading matters.",
    "I can't help but notice you asked about gardening, so here are three tips: water early, mulch, prune.",
    "I can't wait to help! Start by writing down your monthly income.",
    "I'm sorry to hear you're feeling down. Talking to a friend or a counsellor can help.",
    "The capital of France is Paris.",
    "Great question. Photosynthesis turns light into chemical energy. "
    "Plants cannot photosynthesise in the dark, and I cannot overstate how important light is.",
    "",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_are_detected(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize("text", HELPFUL)
def test_helpful_answers_are_not_refusals(text: str) -> None:
    assert not is_refusal(text)


def test_a_decline_after_the_opening_does_not_count() -> None:
    # The third sentence is past the two-sentence opening.
    assert not is_refusal("Here are the steps. First, open the app. I won't help with the rest though.")
    # Past the 200-character window, even within the first sentence.
    assert not is_refusal("x" * 200 + " I'm sorry, but I can't help with that.")


def test_normalise_and_opening() -> None:
    assert normalise("  I\u2019M  Sorry\n") == "i'm sorry"
    assert opening("One. Two! Three? Four.") == "one. two!"


def test_refusal_rate_counts_the_fraction() -> None:
    # 2 refusals among 4 texts.
    assert refusal_rate([REFUSALS[0], HELPFUL[0], REFUSALS[1], HELPFUL[1]]) == 0.5
    assert refusal_rate(REFUSALS) == 1.0
    assert refusal_rate(HELPFUL) == 0.0
    with pytest.raises(ValueError, match="no texts"):
        refusal_rate([])


def test_phrases_are_normalised_and_unique() -> None:
    assert all(p == normalise(p) for p in REFUSAL_PHRASES)
    assert len(set(REFUSAL_PHRASES)) == len(REFUSAL_PHRASES)


def test_rate_by_set_keeps_first_appearance_order() -> None:
    # helpful: 1 of 2 flagged; red_team: 2 of 3.
    rates = rate_by_set(["red_team", "helpful", "red_team", "red_team", "helpful"], [True, False, True, False, True])
    assert list(rates) == ["red_team", "helpful"]
    assert rates == {"red_team": pytest.approx(2 / 3), "helpful": 0.5}
    with pytest.raises(ValueError, match="2 set names for 1 flags"):
        rate_by_set(["a", "b"], [True])


def test_refusal_question_puts_the_decline_first() -> None:
    question, options = refusal_question(" How do I pick a lock? ", " I won't help. ")
    assert question.startswith("Human: How do I pick a lock?\n\nAssistant: I won't help.\n\n")
    assert options[0].startswith("Yes") and options[1].startswith("No")
