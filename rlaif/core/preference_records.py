"""Preference data on disk: pairs, labels, the TRL export, multiple-choice items, position-bias statistics.

The `preferences` stage writes, under ``<run_dir>/preferences/``:

- ``pairs.jsonl``: one `ResponsePair` per line (how it was built, and for a contrastive
  pair the slot of its positive response);
- ``labels.jsonl``: one `PairLabel` per line: the label, its source, and the judge's
  verdict when the judge ran (plus any chain-of-thought text);
- ``trl.jsonl``: ``prompt / chosen / rejected`` rows with the soft label, the form
  TRL's ``RewardTrainer`` and ``DPOTrainer`` read (docs/design.md §4).

Readers validate every row and raise `DatasetError` naming file, line and field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from rlaif.core.contrastive import SLOTS, LabelSource, PairBuilder, PairLabel
from rlaif.core.judging import MultipleChoiceItem, ResponsePair
from rlaif.core.prompts import DatasetError
from rlaif.core.soft_labels import PreferenceLabel, hard_label, is_position_flip, position_bias


def numbered_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("<path>: line N", row)`` for each non-blank line of a JSONL file; bad JSON names its line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise DatasetError(f"{path}: cannot read file: {reason}") from e
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: invalid JSON: {e.msg}") from e
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
        yield where, row


def _get(row: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``row[name]`` checked to be of `kind`, or a `DatasetError` naming `where` and the field."""
    if name not in row:
        raise DatasetError(f"{where}: missing field {name!r}")
    value = row[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python, but no numeric field here means true/false.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise DatasetError(f"{where}: field {name!r} has type {type(value).__name__}")
    return value


def _text(row: Mapping[str, Any], name: str, where: str) -> str:
    value: str = _get(row, name, str, where)
    if not value.strip():
        raise DatasetError(f"{where}: field {name!r} is empty")
    return value


def _probs(row: Mapping[str, Any], name: str, where: str) -> tuple[float, ...]:
    values = _get(row, name, list, where)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise DatasetError(f"{where}: field {name!r} must be a list of numbers")
    return tuple(float(v) for v in values)


# --- response pairs -----------------------------------------------------------


def pair_to_row(pair: ResponsePair) -> dict[str, Any]:
    return {
        "id": pair.id,
        "prompt_id": pair.prompt_id,
        "prompt": pair.prompt,
        "response_a": pair.response_a,
        "response_b": pair.response_b,
        "policy_version": pair.policy_version,
        "pairs": pair.pairs.value,
        "positive": pair.positive,
        "context_principle": pair.context_principle,
    }


def _choice(row: Mapping[str, Any], name: str, allowed: Sequence[str], default: str | None, where: str) -> Any:
    """``row[name]`` (`default` when absent or null) checked to be one of `allowed`."""
    value = row.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise DatasetError(f"{where}: field {name!r} must be one of {list(allowed)}, got {value!r}")
    return value


def pair_from_row(row: Mapping[str, Any], where: str) -> ResponsePair:
    """A pair from its row; rows written before contrastive pairs existed read as sampled pairs."""
    # Responses may legitimately be empty (a sample that stopped at once); ids and prompts may not.
    context = row.get("context_principle")
    if context is not None and not isinstance(context, str):
        raise DatasetError(f"{where}: field 'context_principle' has type {type(context).__name__}")
    with _dataset_errors(where):
        return ResponsePair(
            id=_text(row, "id", where),
            prompt_id=_text(row, "prompt_id", where),
            prompt=_text(row, "prompt", where),
            response_a=_get(row, "response_a", str, where),
            response_b=_get(row, "response_b", str, where),
            policy_version=_get(row, "policy_version", int, where),
            pairs=PairBuilder(_choice(row, "pairs", [b.value for b in PairBuilder], PairBuilder.SAMPLED, where)),
            positive=_choice(row, "positive", SLOTS, None, where),
            context_principle=context,
        )


def read_pairs(path: Path) -> list[ResponsePair]:
    return [pair_from_row(row, where) for where, row in numbered_rows(path)]


@contextmanager
def _dataset_errors(where: str) -> Iterator[None]:
    """A record that fails to build raises `DatasetError` naming the file and line (`where`)."""
    try:
        yield
    except DatasetError:
        raise
    except ValueError as e:
        raise DatasetError(f"{where}: {e}") from e


# --- labels ---------------------------------------------------------------------


def label_to_row(label: PreferenceLabel, reasonings: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "pair_id": label.pair_id,
        "principle_ids": list(label.principle_ids),
        "p_first": label.p_first,
        "p_a_order1": list(label.p_a_order1),
        "p_a_order2": None if label.p_a_order2 is None else list(label.p_a_order2),
        "cot": label.cot,
        "reasonings": list(reasonings),
    }


def label_from_row(row: Mapping[str, Any], where: str) -> PreferenceLabel:
    principle_ids = _get(row, "principle_ids", list, where)
    if not principle_ids or not all(isinstance(p, str) for p in principle_ids):
        raise DatasetError(f"{where}: field 'principle_ids' must be a non-empty list of strings")
    order2 = None if row.get("p_a_order2") is None else _probs(row, "p_a_order2", where)
    with _dataset_errors(where):
        return PreferenceLabel(
            pair_id=_text(row, "pair_id", where),
            principle_ids=tuple(principle_ids),
            p_first=float(_get(row, "p_first", (int, float), where)),
            p_a_order1=_probs(row, "p_a_order1", where),
            p_a_order2=order2,
            cot=_get(row, "cot", bool, where),
        )


def pair_label_to_row(label: PairLabel, reasonings: Sequence[str] = ()) -> dict[str, Any]:
    """A ``labels.jsonl`` row: the label and its source, then the judge's fields (empty without a judge).

    ``p_first`` is the label the reward model trains on; ``p_judge`` the judge's own
    debiased probability (null when the judge did not run).
    """
    if label.judge is not None:
        judge_fields = label_to_row(label.judge, reasonings)
    else:
        judge_fields = {"pair_id": label.pair_id, "principle_ids": [], "p_a_order1": [], "p_a_order2": None}
        judge_fields |= {"cot": False, "reasonings": []}
    return {
        **judge_fields,
        "p_first": label.p_first,
        "source": label.source.value,
        "p_judge": label.p_judge,
        "p_construction": label.p_construction,
    }


def pair_label_from_row(row: Mapping[str, Any], where: str) -> PairLabel:
    """A `PairLabel` from a ``labels.jsonl`` row; rows without ``source`` are the judge's (older files)."""
    source = LabelSource(_choice(row, "source", [s.value for s in LabelSource], LabelSource.JUDGE.value, where))
    judged = bool(row.get("principle_ids"))
    p_judge = row.get("p_judge", row.get("p_first")) if judged else None
    judge = label_from_row({**row, "p_first": p_judge}, where) if judged else None
    p_construction = row.get("p_construction")
    if p_construction is not None:
        p_construction = float(_get(row, "p_construction", (int, float), where))
    with _dataset_errors(where):
        return PairLabel(
            pair_id=_text(row, "pair_id", where),
            p_first=float(_get(row, "p_first", (int, float), where)),
            source=source,
            judge=judge,
            p_construction=p_construction,
        )


def read_labels(path: Path) -> list[PairLabel]:
    return [pair_label_from_row(row, where) for where, row in numbered_rows(path)]


# --- TRL export -----------------------------------------------------------------


def trl_row(pair: ResponsePair, label: PreferenceLabel | PairLabel) -> dict[str, Any]:
    """A ``prompt / chosen / rejected`` row (TRL's standard preference format) with the soft label.

    ``chosen`` is the response the soft label prefers (`hard_label`: an exact
    0.5 tie goes to ``response_b``); ``p_chosen`` = P(chosen ≻ rejected) >= 0.5, and
    ``score_chosen`` / ``score_rejected`` = ``p_chosen`` / ``1 - p_chosen``.
    """
    if pair.id != label.pair_id:
        raise ValueError(f"label {label.pair_id!r} does not belong to pair {pair.id!r}")
    first_wins = hard_label(label.p_first) == 1
    p_chosen = label.p_first if first_wins else 1.0 - label.p_first
    chosen, rejected = (pair.response_a, pair.response_b) if first_wins else (pair.response_b, pair.response_a)
    return {
        "id": pair.id,
        "prompt": pair.prompt,
        "chosen": chosen,
        "rejected": rejected,
        "score_chosen": p_chosen,
        "score_rejected": 1.0 - p_chosen,
        "p_chosen": p_chosen,
    }


# --- position bias ---------------------------------------------------------------


class PositionBiasStats(NamedTuple):
    """Position bias over every (pair, principle) judged in both orders.

    ``flip_rate``: fraction whose hard choice followed the slot (`is_position_flip`);
    ``mean_bias``: mean `position_bias` (mean P(slot A) minus 0.5, in [-0.5, 0.5]).
    """

    judgements: int
    flip_rate: float
    mean_bias: float


def position_bias_stats(labels: Sequence[PreferenceLabel]) -> PositionBiasStats | None:
    """Flip rate and mean slot-A bias over labels judged in both orders; None if none were."""
    both = [
        (p1, p2)
        for label in labels
        if label.p_a_order2 is not None
        for p1, p2 in zip(label.p_a_order1, label.p_a_order2, strict=True)
    ]
    if not both:
        return None
    flips = sum(is_position_flip(p1, p2) for p1, p2 in both)
    bias = math.fsum(position_bias(p1, p2) for p1, p2 in both)
    return PositionBiasStats(len(both), flips / len(both), bias / len(both))


# --- generic multiple-choice items ---------------------------------------------------


def item_from_row(row: Mapping[str, Any], where: str) -> MultipleChoiceItem:
    """A `MultipleChoiceItem` from ``{"id": ..., "prompt": "...", "options": ["...", ...]}``; ids may be ints."""
    raw_id = _get(row, "id", (str, int), where)
    options = _get(row, "options", list, where)
    if len(options) < 2:
        raise DatasetError(f"{where}: field 'options' needs at least two options, got {len(options)}")
    for i, option in enumerate(options):
        if not isinstance(option, str) or not option:
            raise DatasetError(f"{where}: field 'options' entry {i} must be a non-empty string")
    return MultipleChoiceItem(str(raw_id), _text(row, "prompt", where), tuple(options))


def read_item_rows(path: Path) -> list[tuple[dict[str, Any], MultipleChoiceItem]]:
    """Each row of a multiple-choice JSONL file with its parsed item; duplicate ids fail naming both lines."""
    out: list[tuple[dict[str, Any], MultipleChoiceItem]] = []
    seen: dict[str, str] = {}
    for where, row in numbered_rows(path):
        item = item_from_row(row, where)
        if item.id in seen:
            raise DatasetError(f"{where}: duplicate id {item.id!r} (first at {seen[item.id]})")
        seen[item.id] = where.rsplit(": ", 1)[-1]
        out.append((row, item))
    if not out:
        raise DatasetError(f"{path}: no items")
    return out
