"""AI preference labels: from a judge's option log-probs to one soft label.

The feedback model (the judge) sees a conversation, a principle and two
responses as a multiple-choice question ``(A)`` / ``(B)``. Its normalised
probability of each option is the preference: a *soft* label, which trained
better preference models than hard 0/1 labels (Bai et al. 2022,
"Constitutional AI", arXiv 2212.08073, §4.1). The pieces here:

- normalise the option log-probs to probabilities (§4.1);
- debias for position by labelling each pair in both orders and averaging
  (Lee et al. 2023, "RLAIF", arXiv 2309.00267, §2 "Addressing position bias");
- clamp chain-of-thought probabilities to [0.4, 0.6], because CoT answers are
  near-certain and over-confident (Bai et al. 2022 §4.1);
- ensemble over several constitution principles (Bai et al. 2022 §4.1).

Naming used throughout: *response 1* and *response 2* are the pair as stored;
*order 1* shows response 1 as ``(A)``; *order 2* (the swap) shows response 2
as ``(A)``. ``p_a`` is always the judge's probability of *slot* ``(A)``.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

# CoT clamp bounds from Bai et al. 2022 §4.1 ("clamping ... to 40-60 percent").
COT_LOW = 0.4
COT_HIGH = 0.6


def _check_probability(p: float, name: str) -> None:
    if not 0.0 <= p <= 1.0:  # also rejects nan
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def normalise_option_logprobs(logprobs: Sequence[float]) -> tuple[float, ...]:
    """Softmax over the judge's log-probs of the option tokens.

    The option tokens (``A``, ``B``, ...) hold only part of the judge's
    next-token mass; renormalising over them gives P(option | one option is
    chosen) (Bai et al. 2022 §4.1). The max is subtracted first, so large
    log-probs don't overflow. An option the engine did not return (outside
    its top-k) may be passed as ``-inf`` and gets probability 0.

    Args:
        logprobs: one log-prob per option, in slot order (A, B, ...).

    Returns:
        Probabilities in the same order, summing to 1.

    Raises:
        ValueError: if empty, if any entry is nan or +inf, or if every entry is
            ``-inf`` (the judge put no mass on any option: no label exists).
    """
    if not logprobs:
        raise ValueError("need at least one option log-prob")
    if any(math.isnan(x) or x == math.inf for x in logprobs):
        raise ValueError(f"option log-probs must be finite or -inf, got {list(logprobs)}")
    top = max(logprobs)
    if top == -math.inf:
        raise ValueError("every option has log-prob -inf: the judge chose none of them")
    weights = [math.exp(x - top) for x in logprobs]
    total = math.fsum(weights)
    return tuple(w / total for w in weights)


def swap_average(p_a_first: float, p_a_second: float) -> float:
    """Position-debiased P(response 1 preferred) from both presentation orders.

    In order 1 response 1 sits in slot A, so P(response 1) = ``p_a_first``.
    In order 2 response 1 sits in slot B, so P(response 1) = 1 - ``p_a_second``.
    A constant bias towards slot A adds to one and subtracts from the other,
    so the average cancels it (Lee et al. 2023 §2):
    ``(p_a_first + (1 - p_a_second)) / 2``.

    Args:
        p_a_first: P(slot A) with response 1 shown as (A).
        p_a_second: P(slot A) with response 2 shown as (A).

    Returns:
        P(response 1 preferred), in [0, 1].
    """
    _check_probability(p_a_first, "p_a_first")
    _check_probability(p_a_second, "p_a_second")
    return (p_a_first + (1.0 - p_a_second)) / 2.0


def position_bias(p_a_first: float, p_a_second: float) -> float:
    """How much the judge favours slot A, in [-0.5, 0.5].

    Defined as ``(p_a_first + p_a_second) / 2 - 0.5``: the average probability
    the judge gives slot A over both orders, minus the 0.5 an order-blind
    judge would give it on average. An order-blind judge has
    ``p_a_second = 1 - p_a_first`` and so scores exactly 0; a judge that always
    says A with probability 0.7 scores +0.2; one that always says B, -0.5.
    It is also the gap between the order-1 label and the debiased label:
    ``p_a_first - swap_average(p_a_first, p_a_second)``.

    Args:
        p_a_first: P(slot A) with response 1 shown as (A).
        p_a_second: P(slot A) with response 2 shown as (A).
    """
    _check_probability(p_a_first, "p_a_first")
    _check_probability(p_a_second, "p_a_second")
    return (p_a_first + p_a_second) / 2.0 - 0.5


def is_position_flip(p_a_first: float, p_a_second: float) -> bool:
    """True when the judge's hard choice follows the slot, not the response.

    A consistent judge picks slot A in one order and slot B in the other
    (the same response both times). A flip is picking slot A both times or
    slot B both times. An exact 0.5 in either order is no hard choice at
    all, so it never counts as a flip.

    Args:
        p_a_first: P(slot A) with response 1 shown as (A).
        p_a_second: P(slot A) with response 2 shown as (A).
    """
    _check_probability(p_a_first, "p_a_first")
    _check_probability(p_a_second, "p_a_second")
    both_a = p_a_first > 0.5 and p_a_second > 0.5
    both_b = p_a_first < 0.5 and p_a_second < 0.5
    return both_a or both_b


def clamp_probability(p: float, low: float = COT_LOW, high: float = COT_HIGH) -> float:
    """Clamp a probability into [low, high].

    Chain-of-thought judges answer with probabilities near 0 or 1; Bai et al.
    2022 §4.1 clamp them to [0.4, 0.6] so the preference model is not trained
    on over-confident targets.

    Raises:
        ValueError: if ``p`` is not a probability or the bounds are not
            ``0 <= low <= high <= 1``.
    """
    _check_probability(p, "p")
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
    return min(max(p, low), high)


def ensemble_average(probabilities: Sequence[float]) -> float:
    """Mean of per-principle probabilities (Bai et al. 2022 §4.1 ensemble).

    Averaging over principles made the preference model's behaviour more
    robust than any single principle.

    Raises:
        ValueError: if empty or any entry is not a probability.
    """
    if not probabilities:
        raise ValueError("need at least one probability to ensemble")
    for i, p in enumerate(probabilities):
        _check_probability(p, f"probabilities[{i}]")
    return math.fsum(probabilities) / len(probabilities)


def hard_label(p: float) -> int:
    """1 if response 1 is preferred (``p > 0.5``), else 0.

    A tie (exactly 0.5) maps to 0: it is no evidence that response 1 is
    better, and the strict rule matches ``metrics.accuracy``.
    """
    _check_probability(p, "p")
    return 1 if p > 0.5 else 0


@dataclass(frozen=True)
class PreferenceLabel:
    """The judge's verdict on one response pair.

    Attributes:
        pair_id: stable id of the ``PreferencePair`` this labels.
        principle_ids: the constitution principles used, one per judgement.
        p_first: final soft label, P(response 1 preferred), in [0, 1].
        p_a_order1: per principle, P(slot A) with response 1 shown as (A).
        p_a_order2: per principle, P(slot A) with response 2 shown as (A);
            ``None`` when the pair was judged in one order only. Kept so that
            position bias can be measured after the fact.
        cot: whether the judge reasoned first (chain of thought) and the
            label was clamped.
    """

    pair_id: str
    principle_ids: tuple[str, ...]
    p_first: float
    p_a_order1: tuple[float, ...]
    p_a_order2: tuple[float, ...] | None
    cot: bool

    def __post_init__(self) -> None:
        _check_probability(self.p_first, "p_first")
        if len(self.p_a_order1) != len(self.principle_ids):
            raise ValueError("p_a_order1 needs one probability per principle")
        if self.p_a_order2 is not None and len(self.p_a_order2) != len(self.principle_ids):
            raise ValueError("p_a_order2 needs one probability per principle")
        for i, p in enumerate(self.p_a_order1 + (self.p_a_order2 or ())):
            _check_probability(p, f"per-order probability {i}")


def combine_label(
    pair_id: str,
    principle_ids: Sequence[str],
    p_a_order1: Sequence[float],
    p_a_order2: Sequence[float] | None = None,
    *,
    cot: bool = False,
    cot_low: float = COT_LOW,
    cot_high: float = COT_HIGH,
) -> PreferenceLabel:
    """Build a ``PreferenceLabel`` from per-principle, per-order probabilities.

    For each principle: swap-average the two orders when ``p_a_order2`` is
    given (else take ``p_a_order1`` as P(response 1)), then clamp to
    [cot_low, cot_high] if ``cot``. The label is the mean over principles.
    Clamping each principle before the mean keeps the final label inside
    the bounds, and clamping after the swap average clamps the debiased
    belief, not one order's biased one.

    Args:
        pair_id: stable id of the pair.
        principle_ids: one id per principle judged.
        p_a_order1: per principle, P(slot A) with response 1 shown as (A).
        p_a_order2: per principle, P(slot A) with response 2 shown as (A),
            or ``None`` to skip swap debiasing.
        cot: clamp each per-principle probability (chain-of-thought labels).
        cot_low: lower clamp bound.
        cot_high: upper clamp bound.

    Raises:
        ValueError: on empty principles, mismatched lengths or
            non-probabilities.
    """
    n = len(principle_ids)
    if n == 0:
        raise ValueError("need at least one principle")
    if len(p_a_order1) != n or (p_a_order2 is not None and len(p_a_order2) != n):
        raise ValueError("need one probability per principle in each order")
    per_principle = []
    for i in range(n):
        if p_a_order2 is None:
            _check_probability(p_a_order1[i], f"p_a_order1[{i}]")
            p = p_a_order1[i]
        else:
            p = swap_average(p_a_order1[i], p_a_order2[i])
        per_principle.append(clamp_probability(p, cot_low, cot_high) if cot else p)
    return PreferenceLabel(
        pair_id=pair_id,
        principle_ids=tuple(principle_ids),
        p_first=ensemble_average(per_principle),
        p_a_order1=tuple(p_a_order1),
        p_a_order2=None if p_a_order2 is None else tuple(p_a_order2),
        cot=cot,
    )
