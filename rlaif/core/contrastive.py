"""Contrastive preference pairs and where a pair's label comes from.

RLCD (Yang et al. 2023, "RLCD: Reinforcement Learning from Contrastive Distillation",
arXiv 2307.12950, §3) builds each preference pair from two generations of the same
policy: one under a *positive* context that asks for the wanted behaviour, one under a
*negative* context (or none). The pair is labelled by construction: the positive
response is preferred. It needs no judge, so it helps exactly where the judge is weak:
the embedded 135M model judges near chance, while it does follow in-context exemplars.

Here, pure and small:

- the allowed values of ``label.pairs`` (`PairBuilder`) and ``label.source``
  (`LabelSource`), declared once for the config, the stage and the error messages;
- `positive_slot`: which slot (``a`` or ``b``) the positive response takes, by a
  seeded hash of the pair id, so nothing downstream can learn a slot;
- `construction_probability`: the label by construction, P(response a preferred);
- the label-source registry (`LABEL_SOURCES`, `register_label_source`) and
  `label_pair`, which turns a pair's judge verdict and/or construction into its
  final `PairLabel`;
- `construction_agreement`: how often the judge agrees with construction.

Names follow `rlaif.core.soft_labels`: *response a* is response 1 and ``p_first`` is
P(response a preferred).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple

from rlaif.core.soft_labels import PreferenceLabel

__all__ = [
    "LABEL_SOURCES",
    "AgreementStats",
    "LabelSource",
    "LabelSourceSpec",
    "PairBuilder",
    "PairLabel",
    "Slot",
    "construction_agreement",
    "construction_probability",
    "label_pair",
    "place_positive",
    "positive_slot",
    "refusal_rule_probability",
    "register_label_source",
]

Slot = Literal["a", "b"]
SLOTS: tuple[Slot, ...] = ("a", "b")

DEFAULT_CONFIDENCE = 0.9
"""P(positive preferred) of a construction label (``label.construction_confidence``).

Not 1: a contrastive pair is a noisy label (RLCD §3 reports that its positive is not
always the better response, the more so the smaller the model). A target of 0.9 keeps
the Bradley-Terry loss from pushing reward margins without bound on pairs that are
wrong, as label smoothing does; its loss floor is the entropy of 0.9, 0.325 nats.
"""


class PairBuilder(StrEnum):
    """How a prompt's two responses are made (``label.pairs``)."""

    # Two samples of the policy on the bare prompt (RL-CAI, Bai et al. 2022 §4).
    SAMPLED = "sampled"
    # One sample after the constitution's in-context setting, one without it (RLCD).
    CONTRASTIVE = "contrastive"


class LabelSource(StrEnum):
    """Where a pair's label comes from (``label.source``)."""

    JUDGE = "judge"
    CONSTRUCTION = "construction"
    BOTH = "both"


def positive_slot(pair_id: str, *, seed: int) -> Slot:
    """The slot of a contrastive pair's positive response: ``a`` or ``b``, each with probability 1/2.

    The parity of the first byte of ``sha256(f"{seed}:positive:{pair_id}")``: fixed
    for a pair whatever the batch, worker or resume, independent across pairs, and
    independent of the judge's principle sampling (which hashes other keys). If the
    positive always sat in slot ``a``, a reward model or a position-biased judge could
    score well by learning the slot instead of the response.
    """
    digest = hashlib.sha256(f"{seed}:positive:{pair_id}".encode()).digest()
    return SLOTS[digest[0] % 2]


def place_positive(positive: str, negative: str, slot: Slot) -> tuple[str, str]:
    """``(response_a, response_b)`` with the positive response in `slot`."""
    return (positive, negative) if slot == "a" else (negative, positive)


def _check_confidence(confidence: float) -> None:
    if not 0.5 < confidence <= 1.0:  # also rejects nan
        raise ValueError(f"construction confidence must be in (0.5, 1], got {confidence}")


def construction_probability(positive: Slot, *, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """P(response a preferred) by construction: `confidence` if the positive is ``a``, else ``1 - confidence``."""
    _check_confidence(confidence)
    if positive not in SLOTS:
        raise ValueError(f"positive must be 'a' or 'b', got {positive!r}")
    return confidence if positive == "a" else 1.0 - confidence


@dataclass(frozen=True)
class PairLabel:
    """The label a pair is trained on, and where it came from.

    Attributes:
        pair_id: the labelled pair's id.
        p_first: P(response a preferred), in [0, 1]; the reward model's target.
        source: which `LabelSource` made ``p_first``.
        judge: the judge's verdict (its ``p_first`` is the debiased, principle-averaged
            probability), or None when the judge did not run.
        p_construction: the label by construction, or None when it was not used.
    """

    pair_id: str
    p_first: float
    source: LabelSource
    judge: PreferenceLabel | None
    p_construction: float | None

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_first <= 1.0:
            raise ValueError(f"p_first must be a probability in [0, 1], got {self.p_first}")
        spec = LABEL_SOURCES[self.source]
        if spec.uses_judge != (self.judge is not None):
            raise ValueError(
                f"label of {self.pair_id!r}: source {self.source.value!r} and the judge's verdict disagree"
            )
        if spec.uses_construction != (self.p_construction is not None):
            raise ValueError(f"label of {self.pair_id!r}: source {self.source.value!r} and p_construction disagree")
        if self.judge is not None and self.judge.pair_id != self.pair_id:
            raise ValueError(f"label of {self.pair_id!r} holds the judge's verdict on {self.judge.pair_id!r}")

    @property
    def p_judge(self) -> float | None:
        """The judge's debiased P(response a preferred), when it ran."""
        return None if self.judge is None else self.judge.p_first


# --- the label-source registry -------------------------------------------------------

LabelFn = Callable[[float | None, float | None], float]
"""(judge's P(a), construction's P(a)) -> the label's P(a); each None when unused."""


@dataclass(frozen=True)
class LabelSourceSpec:
    """A registered label source: its function and the inputs it needs.

    A source that does not use the judge says so, and the stage then starts no judge.
    """

    fn: LabelFn
    uses_judge: bool
    uses_construction: bool


LABEL_SOURCES: dict[LabelSource, LabelSourceSpec] = {}


def register_label_source(
    source: LabelSource, *, uses_judge: bool, uses_construction: bool
) -> Callable[[LabelFn], LabelFn]:
    """Decorator: register `fn` as the label function of `source`."""

    def register(fn: LabelFn) -> LabelFn:
        LABEL_SOURCES[source] = LabelSourceSpec(fn, uses_judge, uses_construction)
        return fn

    return register


@register_label_source(LabelSource.JUDGE, uses_judge=True, uses_construction=False)
def _judge_label(p_judge: float | None, p_construction: float | None) -> float:
    assert p_judge is not None
    return p_judge


@register_label_source(LabelSource.CONSTRUCTION, uses_judge=False, uses_construction=True)
def _construction_label(p_judge: float | None, p_construction: float | None) -> float:
    assert p_construction is not None
    return p_construction


@register_label_source(LabelSource.BOTH, uses_judge=True, uses_construction=True)
def _mean_label(p_judge: float | None, p_construction: float | None) -> float:
    """The mean of the two: an equal-weight linear opinion pool.

    The judge can only move the label within ``confidence / 2`` of its construction
    value, and where it disagrees as strongly as construction agrees the two cancel
    to 0.5. A judge at chance (0.5) halves the construction margin: 0.9 becomes 0.7.
    A product of odds would let a near-certain judge overrule construction outright,
    which a weak judge should not; the mean is bounded and needs no extra knob.
    """
    assert p_judge is not None and p_construction is not None
    return (p_judge + p_construction) / 2.0


def label_pair(
    pair_id: str,
    *,
    source: LabelSource,
    positive: Slot | None,
    judge: PreferenceLabel | None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> PairLabel:
    """A pair's final label from the registered `source`.

    Args:
        pair_id: the pair's id.
        source: which registered label source to use.
        positive: the slot of the positive response (contrastive pairs), else None.
        judge: the judge's verdict on the pair, or None if it did not run.
        confidence: P(positive preferred) of the construction label.

    Raises:
        ValueError: if the source needs a judge's verdict or a positive slot that is missing.
    """
    spec = LABEL_SOURCES[source]
    if spec.uses_judge and judge is None:
        raise ValueError(f"pair {pair_id!r}: label source {source.value!r} needs the judge's verdict")
    p_construction = None
    if spec.uses_construction:
        if positive is None:
            raise ValueError(f"pair {pair_id!r}: label source {source.value!r} needs a contrastive pair (no positive)")
        p_construction = construction_probability(positive, confidence=confidence)
    p_judge = judge.p_first if judge is not None else None
    return PairLabel(
        pair_id=pair_id,
        p_first=spec.fn(p_judge, p_construction),
        source=source,
        judge=judge if spec.uses_judge else None,
        p_construction=p_construction,
    )


# --- a refusal of a benign request is never the better answer ---------------------------


def refusal_rule_probability(
    refuses_a: bool, refuses_b: bool, *, confidence: float = DEFAULT_CONFIDENCE
) -> float | None:
    """P(response a preferred) on a benign prompt's pair by the refusal rule, or None where it has no say.

    Where exactly one of the two responses declines the (benign) request, the other is
    preferred with `confidence`; where both or neither decline, the rule is silent and the
    pair keeps the label its source gave it. The refusal flags come from a detector
    (``rlaif.core.refusal.is_refusal``) run by the caller.
    """
    _check_confidence(confidence)
    if refuses_a == refuses_b:
        return None
    return 1.0 - confidence if refuses_a else confidence


# --- does the judge agree with construction? -----------------------------------------


class AgreementStats(NamedTuple):
    """The judge against construction over contrastive pairs it labelled.

    ``agreement_rate``: fraction where the judge's P(positive preferred) > 0.5;
    ``mean_p_positive``: the mean of that probability (0.5 is a judge at chance).
    """

    pairs: int
    agreement_rate: float
    mean_p_positive: float


def construction_agreement(judged: Sequence[tuple[Slot, float]]) -> AgreementStats | None:
    """How often the judge prefers the positive response; None if there is nothing to compare.

    Args:
        judged: per contrastive pair, the positive's slot and the judge's debiased
            P(response a preferred).
    """
    if not judged:
        return None
    p_positive = [p if slot == "a" else 1.0 - p for slot, p in judged]
    agree = sum(p > 0.5 for p in p_positive)
    return AgreementStats(len(p_positive), agree / len(p_positive), math.fsum(p_positive) / len(p_positive))
