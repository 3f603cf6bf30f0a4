"""The constitutional judge: a thin shell over one engine that labels response pairs.

Plain Python, testable in-process; `rlaif.actors.pool.ActorPool` applies `ray.remote`
with the `judge` role's resources. For a shard of comparisons it builds every
question (k principles x both orders) and scores them all in ONE batched
`engine.score_options` call over the option letters, so the engine batches the
whole shard and serves the shared few-shot preamble from its prefix cache; with
chain of thought, one batched `generate` for the reasoning comes first.

    judge = ConstitutionalJudge(EngineSpec(model_path=...), constitution.judge_few_shot)
    verdicts = judge.label(comparisons, both_orders=True, cot=False)
"""

from __future__ import annotations

from collections.abc import Sequence

from rlaif.core.constitution import JudgeExample
from rlaif.core.judging import (
    COT_STOP,
    JUDGE_OPTIONS,
    Comparison,
    JudgeVerdict,
    MultipleChoiceItem,
    MultipleChoiceScore,
    build_queries,
    collect_verdicts,
    cot_scoring_prompt,
    render_preamble,
)
from rlaif.core.soft_labels import normalise_option_logprobs
from rlaif.engines.base import EngineSpec, OptionRequest, SamplingParams, ThroughputStats
from rlaif.engines.factory import build_engine


class ConstitutionalJudge:
    """Holds the feedback model in an engine; answers multiple-choice questions with option probabilities."""

    def __init__(self, spec: EngineSpec, few_shot: Sequence[JudgeExample], cot_max_new_tokens: int = 128) -> None:
        if cot_max_new_tokens < 1:
            raise ValueError(f"cot_max_new_tokens must be >= 1, got {cot_max_new_tokens}")
        self.engine = build_engine(spec)
        self.preamble = render_preamble(few_shot)
        self.cot_params = SamplingParams(
            temperature=0.0, max_new_tokens=cot_max_new_tokens, stop=COT_STOP, seed=spec.seed
        )

    def label(self, comparisons: Sequence[Comparison], both_orders: bool, cot: bool) -> list[JudgeVerdict]:
        """Per-principle, per-order P(slot A) for each comparison, in order (unclamped: the driver clamps CoT)."""
        if not comparisons:
            return []
        queries = build_queries(comparisons, self.preamble, both_orders, cot)
        texts = [q.text for q in queries]
        reasonings = None
        if cot:
            generations = self.engine.generate(texts, self.cot_params)
            reasonings = [g.completions[0].text.strip() for g in generations]
            texts = [cot_scoring_prompt(t, r) for t, r in zip(texts, reasonings, strict=True)]
        scores = self.engine.score_options([OptionRequest(t, JUDGE_OPTIONS) for t in texts])
        # Renormalise in float64: the engines' normalised log-probs can exceed 0 by rounding.
        p_a = [normalise_option_logprobs(s.logprobs)[0] for s in scores]
        return collect_verdicts(comparisons, queries, p_a, reasonings)

    def score_items(self, items: Sequence[MultipleChoiceItem]) -> list[MultipleChoiceScore]:
        """Each item's option probabilities: the options scored as continuations of its prompt, one batch."""
        scores = self.engine.score_options([OptionRequest(i.prompt, i.options) for i in items])
        return [
            MultipleChoiceScore(item.id, normalise_option_logprobs(s.logprobs))
            for item, s in zip(items, scores, strict=True)
        ]

    def stats(self) -> ThroughputStats:
        return self.engine.stats()

    def shutdown(self) -> None:
        self.engine.shutdown()
