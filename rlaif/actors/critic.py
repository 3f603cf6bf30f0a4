"""The constitutional critic: a thin shell over one engine that answers, critiques and revises.

It serves both SL-CAI methods (`rlaif.core.cai.SLCAIMethod`): `critique` and `revise`
for critique -> revision chains, `answer_in_context` for context distillation, and
plain `answer` for both.

Plain Python, testable in-process; `rlaif.actors.pool.ActorPool` applies `ray.remote`
with the role's resources. Every method takes a whole shard of tasks and makes one
engine call for it, so the engine batches across all prompts of a round (docs/design.md §2).
The few-shot preamble is rendered once, here, and put first in every conversation,
so the engine's prefix cache computes it once (`rlaif.core.cai`); likewise the
in-context setting comes first, before each prompt, and is shared by every prompt
under one principle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rlaif.core.cai import (
    ContextTask,
    CritiqueTask,
    RevisionTask,
    Turn,
    context_messages,
    context_turns,
    critique_messages,
    few_shot_preamble,
    revision_messages,
)
from rlaif.core.constitution import CritiqueExample, Exemplar
from rlaif.engines.base import EngineSpec, Message, SamplingParams, ThroughputStats
from rlaif.engines.factory import build_engine


@dataclass(frozen=True)
class CriticOutput:
    """One generated text for one record: the answer, critique or revision, and its length in tokens."""

    record_id: str
    text: str
    tokens: int
    finish_reason: str


@dataclass(frozen=True)
class AnswerTask:
    """A plain prompt to answer (red-team first answers, helpfulness answers)."""

    record_id: str
    prompt: str


class ConstitutionalCritic:
    """Holds the critique model in an inference engine; runs one SL-CAI step over a shard of records."""

    def __init__(
        self, spec: EngineSpec, few_shot: tuple[CritiqueExample, ...], exemplars: tuple[Exemplar, ...] = ()
    ) -> None:
        self.engine = build_engine(spec)
        self.preamble = few_shot_preamble(few_shot)
        self.exemplars = exemplars

    def answer(self, tasks: Sequence[AnswerTask], params: SamplingParams) -> list[CriticOutput]:
        """The model's answer to each prompt, no preamble: the response that SL-CAI then critiques."""
        return self._generate([t.record_id for t in tasks], [[Turn("user", t.prompt)] for t in tasks], params)

    def answer_in_context(self, tasks: Sequence[ContextTask], params: SamplingParams) -> list[CriticOutput]:
        """Each prompt answered after its principle's guideline and the exemplars: one engine call for the shard."""
        chats = [context_messages(context_turns(self.exemplars, t.principle), t.prompt) for t in tasks]
        return self._generate([t.record_id for t in tasks], chats, params)

    def critique(self, tasks: Sequence[CritiqueTask], params: SamplingParams) -> list[CriticOutput]:
        """One critique per task, of its answer against its principle's critique request."""
        chats = [critique_messages(self.preamble, t) for t in tasks]
        return self._generate([t.record_id for t in tasks], chats, params)

    def revise(self, tasks: Sequence[RevisionTask], params: SamplingParams) -> list[CriticOutput]:
        """One revision per task, written after its critique and its principle's revision request."""
        chats = [revision_messages(self.preamble, t) for t in tasks]
        return self._generate([t.record_id for t in tasks], chats, params)

    def stats(self) -> ThroughputStats:
        return self.engine.stats()

    def _generate(
        self, ids: Sequence[str], chats: Sequence[Sequence[Turn]], params: SamplingParams
    ) -> list[CriticOutput]:
        if not chats:
            return []
        prompts = [[Message(t.role, t.content) for t in chat] for chat in chats]
        generations = self.engine.generate(prompts, params)
        outputs = []
        for record_id, gen in zip(ids, generations, strict=True):
            c = gen.completions[0]
            outputs.append(CriticOutput(record_id, c.text.strip(), len(c.token_ids), c.finish_reason))
        return outputs
