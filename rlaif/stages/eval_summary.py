"""Per-model summaries of evaluation answers, shared by the evaluate stage and `python -m rlaif.evaluate`.

Pure functions of the prompts and the answers (no Ray, no engine), so unit tests can
check them on hand-written answers. Prompts come as ``(set name, record)`` pairs;
answers as ``responses[model][prompt id] = {"response": text, "tokens": count}``.
Every summary is keyed ``[model][set]`` in the order the models and sets were given,
so a new held-out set appears in every table by name without code changes here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlaif.core.prompts import PromptRecord
from rlaif.core.refusal import is_refusal, rate_by_set

# (set name, prompt) in evaluation order.
Prompts = Sequence[tuple[str, PromptRecord]]
# model -> prompt id -> {"response": text, "tokens": count}.
Responses = Mapping[str, Mapping[str, Mapping[str, Any]]]
# model -> set -> value.
ByModelAndSet = dict[str, dict[str, float]]


def set_names(prompts: Prompts) -> list[str]:
    """The prompt sets, in order of first appearance."""
    return list(dict.fromkeys(name for name, _ in prompts))


def set_sizes(prompts: Prompts) -> dict[str, int]:
    """Prompts per set."""
    return {name: sum(1 for n, _ in prompts if n == name) for name in set_names(prompts)}


def model_summary(
    models: Sequence[str], prompts: Prompts, responses: Responses, scores: Mapping[str, Sequence[float]] | None
) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and set: ``length_mean`` (tokens) and, with `scores` (in prompt order), ``rm_score_mean``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for m in models:
        out[m] = {}
        for name in set_names(prompts):
            idx = [i for i, (n, _) in enumerate(prompts) if n == name]
            entry = {"length_mean": float(np.mean([responses[m][prompts[i][1].id]["tokens"] for i in idx]))}
            if scores is not None:
                entry["rm_score_mean"] = float(np.mean([scores[m][i] for i in idx]))
            out[m][name] = entry
    return out


def refusal_summary(models: Sequence[str], prompts: Prompts, responses: Responses) -> ByModelAndSet:
    """Per model and set: the fraction of answers that decline, by phrase (`rlaif.core.refusal.is_refusal`)."""
    names = [n for n, _ in prompts]
    return {m: rate_by_set(names, [is_refusal(responses[m][p.id]["response"]) for _, p in prompts]) for m in models}


def refusal_item_id(model: str, prompt_id: str) -> str:
    """The id of the judge's refusal question about `model`'s answer to a prompt."""
    return f"{model}:{prompt_id}"


def judged_refusal_summary(models: Sequence[str], prompts: Prompts, p_decline: Mapping[str, float]) -> ByModelAndSet:
    """Per model and set: the fraction of answers the judge thinks decline (P(decline) > 0.5).

    `p_decline` maps `refusal_item_id(model, prompt id)` to the judge's probability of "yes, it declines".
    """
    names = [n for n, _ in prompts]
    return {m: rate_by_set(names, [p_decline[refusal_item_id(m, p.id)] > 0.5 for _, p in prompts]) for m in models}


def refusal_lines(refusal: ByModelAndSet, judged: ByModelAndSet | None = None) -> list[str]:
    """A console table of refusal rates: one row per model, one column per set (``phrase / judge`` if judged)."""
    if not refusal:
        return []
    sets = list(next(iter(refusal.values())))
    width = max(len(m) for m in [*refusal, "model"])
    cell = max(13 if judged else 8, *(len(s) for s in sets))
    lines = [f"{'model':{width}s}  " + "  ".join(f"{s:>{cell}s}" for s in sets)]
    for model, by_set in refusal.items():
        cells = [f"{by_set[s]:.2f} / {judged[model][s]:.2f}" if judged else f"{by_set[s]:.2f}" for s in sets]
        lines.append(f"{model:{width}s}  " + "  ".join(f"{c:>{cell}s}" for c in cells))
    return lines
