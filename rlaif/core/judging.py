"""The constitutional judge's multiple-choice prompts and the records around them.

RL-CAI labels a pair of responses by asking a feedback model a multiple-choice
question (Bai et al. 2022, "Constitutional AI", arXiv 2212.08073, §4.1)::

    Consider the following conversation between a human and an assistant:

    Human: <prompt>

    <principle's choice question>
    Options:
    (A) <response shown first>
    (B) <response shown second>
    The answer is: (

The next token is the option letter, so one scoring pass over the letters gives
the soft label (``A`` and ``B`` are single tokens after ``(`` for the SmolLM2
tokenizer, and the engines score them from one shared prefix). The
constitution's judge few-shot examples, rendered the same way with their answer,
form a preamble placed first: it is identical for every question, so vLLM's
prefix cache computes it once. Chain of thought (§4.1) replaces the answer slot
with ``Let's think step by step:``; the judge's reasoning is generated, then the
letters are scored after ``Therefore, the answer is: (``.

Here: the typed records (`ResponsePair`, `Comparison`, `JudgeQuery`,
`JudgeVerdict`, `MultipleChoiceItem`), prompt rendering, and turning per-query
probabilities back into per-pair verdicts. Soft-label math lives in
`rlaif.core.soft_labels`; file formats in `rlaif.core.preference_records`.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rlaif.core.constitution import JudgeExample, Principle
from rlaif.core.contrastive import SLOTS, PairBuilder, Slot

OPTION_LETTERS = string.ascii_uppercase
"""Letters naming options (A), (B), ...; each is one token after "(" for SmolLM2's tokenizer."""

JUDGE_OPTIONS = ("A", "B")
"""The continuations scored in the judge's answer slot."""

INTRO = "Consider the following conversation between a human and an assistant:"
ANSWER_SLOT = "The answer is: ("
COT_CUE = "Let's think step by step:"
COT_ANSWER_SLOT = "Therefore, the answer is: ("
# The judge's reasoning ends at a blank line or where it starts to answer by itself:
# the scoring prompt supplies its own "Therefore, the answer is: (".
COT_STOP = ("\n\n", "Therefore", "The answer is")

Order = Literal[1, 2]


@dataclass(frozen=True)
class ResponsePair:
    """Two responses to one prompt from the policy; ``response_a`` is "response 1" of `soft_labels`.

    ``pairs`` names the builder that made them (`PairBuilder`). A contrastive pair also
    records which slot holds the response made with the constitution's in-context
    setting (``positive``) and the principle whose guideline that setting stated
    (``context_principle``); both are None for sampled pairs.
    """

    id: str
    prompt_id: str
    prompt: str
    response_a: str
    response_b: str
    policy_version: int
    pairs: PairBuilder = PairBuilder.SAMPLED
    positive: Slot | None = None
    context_principle: str | None = None

    def __post_init__(self) -> None:
        if (self.pairs == PairBuilder.CONTRASTIVE) != (self.positive is not None):
            raise ValueError(f"pair {self.id!r}: a {self.pairs.value} pair has positive={self.positive!r}")
        if self.positive not in (None, *SLOTS):
            raise ValueError(f"pair {self.id!r}: positive must be 'a' or 'b', got {self.positive!r}")


@dataclass(frozen=True)
class Comparison:
    """A pair and the principles (sampled with replacement, so ids may repeat) it is judged under."""

    pair: ResponsePair
    principles: tuple[Principle, ...]

    def __post_init__(self) -> None:
        if not self.principles:
            raise ValueError(f"comparison of pair {self.pair.id!r} needs at least one principle")


@dataclass(frozen=True)
class JudgeQuery:
    """One question put to the judge: pair, principle slot, presentation order, and the prompt text.

    ``order`` 1 shows ``response_a`` as (A); order 2 (the swap) shows ``response_b`` as (A).
    ``slot`` indexes ``Comparison.principles``. For chain of thought, ``text`` ends
    with the reasoning cue; otherwise with the answer slot.
    """

    pair_id: str
    slot: int
    order: Order
    text: str


@dataclass(frozen=True)
class JudgeVerdict:
    """The judge's per-principle, per-order probabilities of slot (A) for one pair.

    ``p_a_order2`` is ``None`` when only order 1 was asked. ``reasonings`` holds the
    chain-of-thought texts, order 1 then order 2 for each principle in turn, or is
    empty without chain of thought.
    """

    pair_id: str
    principle_ids: tuple[str, ...]
    p_a_order1: tuple[float, ...]
    p_a_order2: tuple[float, ...] | None
    reasonings: tuple[str, ...]


@dataclass(frozen=True)
class MultipleChoiceItem:
    """A generic multiple-choice question: a prompt and the candidate options to score after it."""

    id: str
    prompt: str
    options: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.options) < 2:
            raise ValueError(f"item {self.id!r}: need at least two options, got {len(self.options)}")


@dataclass(frozen=True)
class MultipleChoiceScore:
    """Each option's probability, normalised over the item's options, in option order."""

    id: str
    probs: tuple[float, ...]


# --- rendering ---------------------------------------------------------------


def render_question(conversation: str, question: str, option_a: str, option_b: str) -> str:
    """The question body without an answer slot: conversation, principle question, options (A)/(B).

    Texts are stripped so stray whitespace around a sampled response cannot change
    the token boundaries near the option letters.
    """
    return (
        f"{INTRO}\n\nHuman: {conversation.strip()}\n\n{question.strip()}\n"
        f"Options:\n(A) {option_a.strip()}\n(B) {option_b.strip()}\n"
    )


def render_preamble(examples: Sequence[JudgeExample]) -> str:
    """The few-shot preamble: each worked example with its answer, separated by blank lines."""
    return "".join(
        render_question(ex.conversation, ex.question, ex.option_a, ex.option_b) + f"{ANSWER_SLOT}{ex.answer})\n\n"
        for ex in examples
    )


def render_judge_prompt(preamble: str, pair: ResponsePair, principle: Principle, order: Order, cot: bool) -> str:
    """The full judge prompt for one pair, principle and order, ending in the answer slot or the CoT cue."""
    first, second = (pair.response_a, pair.response_b) if order == 1 else (pair.response_b, pair.response_a)
    body = render_question(pair.prompt, principle.choice_question, first, second)
    return preamble + body + (COT_CUE if cot else ANSWER_SLOT)


def cot_scoring_prompt(cot_prompt: str, reasoning: str) -> str:
    """The prompt scored after chain of thought: the reasoning prompt, the reasoning, then the answer slot."""
    return f"{cot_prompt} {reasoning.strip()}\n{COT_ANSWER_SLOT}"


def render_lettered(question: str, options: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """A free-standing question with lettered options ending in the answer slot, and the letters to score.

    Lets the judge's method (score the option letters) run on any multiple-choice
    set: ``("Which is prime?", ["4", "7"])`` becomes ``"Which is prime?\\nOptions:\\n(A) 4\\n(B) 7\\n
    The answer is: ("`` with letters ``("A", "B")``.
    """
    if not 2 <= len(options) <= len(OPTION_LETTERS):
        raise ValueError(f"need 2 to {len(OPTION_LETTERS)} options, got {len(options)}")
    letters = tuple(OPTION_LETTERS[: len(options)])
    lines = "".join(f"({letter}) {option.strip()}\n" for letter, option in zip(letters, options, strict=True))
    return f"{question.strip()}\nOptions:\n{lines}{ANSWER_SLOT}", letters


# --- queries out, verdicts back -----------------------------------------------


def build_queries(comparisons: Sequence[Comparison], preamble: str, both_orders: bool, cot: bool) -> list[JudgeQuery]:
    """Every question for a batch of comparisons: per pair, per principle, order 1 then (optionally) order 2."""
    orders: tuple[Order, ...] = (1, 2) if both_orders else (1,)
    return [
        JudgeQuery(c.pair.id, slot, order, render_judge_prompt(preamble, c.pair, principle, order, cot))
        for c in comparisons
        for slot, principle in enumerate(c.principles)
        for order in orders
    ]


def collect_verdicts(
    comparisons: Sequence[Comparison],
    queries: Sequence[JudgeQuery],
    p_a: Sequence[float],
    reasonings: Sequence[str] | None = None,
) -> list[JudgeVerdict]:
    """Regroup per-query P(slot A) into one verdict per comparison, in the comparisons' order.

    Args:
        comparisons: what `build_queries` was given.
        queries: its output, in any order.
        p_a: P(slot A) for each query, aligned with `queries`.
        reasonings: chain-of-thought text for each query, aligned with `queries`, or None.

    Raises:
        ValueError: if the lengths differ or a comparison is missing an order-1 answer.
    """
    if len(p_a) != len(queries) or (reasonings is not None and len(reasonings) != len(queries)):
        raise ValueError(f"need one probability (and reasoning) per query: {len(queries)} queries, {len(p_a)} probs")
    found = {(q.pair_id, q.slot, q.order): i for i, q in enumerate(queries)}
    verdicts = []
    for c in comparisons:
        slots = range(len(c.principles))
        first = [found.get((c.pair.id, s, 1)) for s in slots]
        second = [found.get((c.pair.id, s, 2)) for s in slots]
        if any(i is None for i in first):
            raise ValueError(f"pair {c.pair.id!r}: no order-1 answer for every principle")
        both = all(i is not None for i in second)
        used = [i for s in slots for i in ((first[s], second[s]) if both else (first[s],))]
        verdicts.append(
            JudgeVerdict(
                pair_id=c.pair.id,
                principle_ids=tuple(p.id for p in c.principles),
                p_a_order1=tuple(p_a[i] for i in first if i is not None),
                p_a_order2=tuple(p_a[i] for i in second if i is not None) if both else None,
                reasonings=tuple(reasonings[i] for i in used if i is not None) if reasonings is not None else (),
            )
        )
    return verdicts
