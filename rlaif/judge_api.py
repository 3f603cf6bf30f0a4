"""Score any multiple-choice set with the judge's method, from Python; `rlaif.score` is its command line.

Each item is a prompt and its candidate options; the result is each option's
probability, normalised over the item's options, from one scoring pass (the same
`ConstitutionalJudge.score_items` the preference stage uses). Two ways to put a
question:

- as given (default): the options are continuations of the prompt, e.g. a prompt
  that ends in ``"The answer is: ("`` with options ``["A", "B"]``, or
  ``"The capital of France is"`` with ``[" Paris", " Rome"]``;
- ``lettered=True``: the options are listed under the prompt as (A), (B), ...,
  and the letters are scored after ``"The answer is: ("``, as the judge does.

    from rlaif.core.judging import MultipleChoiceItem
    from rlaif.judge_api import score_multiple_choice
    scores = score_multiple_choice([MultipleChoiceItem("q1", "2 + 2 =", (" 4", " 5"))])
    scores[0].probs          # (0.9..., 0.0...)

The engine runs in this process (no Ray): this is for evaluation sets, not for
the pipeline, which spreads judging over a pool of judge actors.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlaif.actors.judge import ConstitutionalJudge
from rlaif.core.judging import MultipleChoiceItem, MultipleChoiceScore, render_lettered
from rlaif.engines.base import EngineSpec
from rlaif.engines.models import EMBEDDED_MODEL, resolve_model


def as_lettered(item: MultipleChoiceItem) -> MultipleChoiceItem:
    """The item with its options listed as (A), (B), ... under the prompt, and the letters as options."""
    prompt, letters = render_lettered(item.prompt, item.options)
    return MultipleChoiceItem(item.id, prompt, letters)


def score_with_spec(
    items: Sequence[MultipleChoiceItem], spec: EngineSpec, lettered: bool = False, batch_size: int = 256
) -> list[MultipleChoiceScore]:
    """Score `items` on an engine built from `spec`, `batch_size` items per engine call, in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    asked = [as_lettered(i) for i in items] if lettered else list(items)
    judge = ConstitutionalJudge(spec, few_shot=())
    try:
        scores: list[MultipleChoiceScore] = []
        for start in range(0, len(asked), batch_size):
            scores.extend(judge.score_items(asked[start : start + batch_size]))
        return scores
    finally:
        judge.shutdown()


def score_multiple_choice(
    items: Sequence[MultipleChoiceItem],
    model: str = EMBEDDED_MODEL,
    backend: str = "vllm",
    lettered: bool = False,
    max_model_len: int = 2048,
    batch_size: int = 256,
) -> list[MultipleChoiceScore]:
    """Each item's option probabilities under `model` (embedded name, local folder or hub id) on `backend`.

    Raises:
        ModelNotFoundError: the model cannot be had.
        PromptTooLongError: an item does not fit `max_model_len`.
        ValueError: a bad backend or batch size.
    """
    if backend not in ("vllm", "transformers"):
        raise ValueError(f"backend must be 'vllm' or 'transformers', got {backend!r}")
    spec = EngineSpec(model_path=str(resolve_model(model)), backend=backend, max_model_len=max_model_len)  # type: ignore[arg-type]
    return score_with_spec(items, spec, lettered, batch_size)
