"""SL-CAI records and rendering: the two ways SL-CAI makes its supervised answers.

`SLCAIMethod` names them. ``critique_revision`` is the paper's (Bai et al. 2022, arXiv
2212.08073, §3): for each red-team prompt the model answers, then for ``rounds`` rounds
it critiques its latest answer against one sampled principle and revises it.
``context_distillation`` (Askell et al. 2021, arXiv 2112.00861) is for models too small
to critique: each red-team prompt is answered once with a sampled principle's guideline
and the constitution's exemplars in context, and SFT learns that answer for the bare
prompt. This module holds the pure parts, used by the critic actors
(`rlaif.actors.critic`) and the stages:

- the records (`RevisionRound`, `SLCAIRecord`) and the tasks sent to critic actors
  (`CritiqueTask`, `RevisionTask`, `ContextTask`), all frozen dataclasses;
- chat rendering: `critique_messages` / `revision_messages` put the few-shot preamble
  first, `context_messages` the in-context setting (`context_turns`), so the engine's
  prefix cache serves what prompts share;
- `degeneracy_reason` / `is_degenerate`: which revisions (or distilled answers) are unusable;
- `sft_samples` / `mix_sft`: the SFT set of final answers plus helpful answers.

Context per round: each round shows the model the prompt and its *latest usable*
answer, not the whole chain of earlier critiques. The context stays bounded however
many rounds run, and a small model sees exactly the format of the few-shot examples.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from rlaif.core.constitution import Constitution, CritiqueExample, Exemplar, Principle, sample_principles

__all__ = [
    "ContextTask",
    "CritiqueTask",
    "RevisionRound",
    "RevisionTask",
    "SFTSample",
    "SLCAIMethod",
    "SLCAIRecord",
    "Turn",
    "build_record",
    "context_degeneracy",
    "context_messages",
    "context_turns",
    "critique_messages",
    "degeneracy_reason",
    "distilled_record",
    "few_shot_preamble",
    "is_degenerate",
    "latest_answer",
    "mix_sft",
    "principle_for",
    "revision_messages",
    "sft_batch",
    "sft_samples",
]


class SLCAIMethod(StrEnum):
    """How SL-CAI makes the answers it fine-tunes on (``sl_cai.method``)."""

    # The paper's critique -> revision chains: needs a model able to critique its own answers.
    CRITIQUE_REVISION = "critique_revision"
    # One answer given with a principle's guideline and the exemplars in context; SFT on the bare prompt.
    CONTEXT_DISTILLATION = "context_distillation"


class Turn(NamedTuple):
    """One chat message; field-compatible with `rlaif.engines.base.Message`."""

    role: str
    content: str


@dataclass(frozen=True)
class RevisionRound:
    """One critique -> revision round; `degenerate` marks an unusable revision."""

    round: int
    principle_id: str
    critique: str
    revision: str
    degenerate: bool


@dataclass(frozen=True)
class SLCAIRecord:
    """One red-team prompt's SL-CAI outcome (docs/design.md §4); `final_answer` is what SFT learns.

    ``critique_revision``: `final_answer` is the last non-degenerate revision of `rounds`,
    and `degenerate` is True when no round produced one. ``context_distillation``: no
    rounds; `principle_id` names the principle whose guideline was in context, the answer
    given there is both `first_answer` and `final_answer`, and `degenerate` marks it
    unusable. A degenerate record is left out of SFT. Rows written before `method`
    existed read as ``critique_revision``.
    """

    id: str
    prompt: str
    category: str | None
    first_answer: str
    rounds: tuple[RevisionRound, ...]
    final_answer: str
    degenerate: bool
    seed: int
    method: SLCAIMethod = SLCAIMethod.CRITIQUE_REVISION
    # context_distillation only: the principle whose guideline preceded the prompt.
    principle_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "category": self.category,
            "first_answer": self.first_answer,
            "rounds": [
                {
                    "round": r.round,
                    "principle_id": r.principle_id,
                    "critique": r.critique,
                    "revision": r.revision,
                    "degenerate": r.degenerate,
                }
                for r in self.rounds
            ],
            "final_answer": self.final_answer,
            "degenerate": self.degenerate,
            "seed": self.seed,
            "method": self.method.value,
            "principle_id": self.principle_id,
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> SLCAIRecord:
        """Parse a row written by `to_dict`; ``ValueError`` names the missing or mistyped field."""
        rid = _field(row, "id", str, "record")
        where = f"record {rid!r}"
        raw_rounds = _field(row, "rounds", list, where)
        rounds = tuple(
            RevisionRound(
                round=_field(r, "round", int, f"{where} round #{i}"),
                principle_id=_field(r, "principle_id", str, f"{where} round #{i}"),
                critique=_field(r, "critique", str, f"{where} round #{i}"),
                revision=_field(r, "revision", str, f"{where} round #{i}"),
                degenerate=_field(r, "degenerate", bool, f"{where} round #{i}"),
            )
            for i, r in enumerate(raw_rounds)
        )
        category = _optional_text(row, "category", where)
        principle_id = _optional_text(row, "principle_id", where)
        method = row.get("method", SLCAIMethod.CRITIQUE_REVISION.value)
        methods = [m.value for m in SLCAIMethod]
        if method not in methods:
            raise ValueError(f"{where}: field 'method' must be one of {methods}, got {method!r}")
        return cls(
            id=rid,
            prompt=_field(row, "prompt", str, where),
            category=category,
            first_answer=_field(row, "first_answer", str, where),
            rounds=rounds,
            final_answer=_field(row, "final_answer", str, where),
            degenerate=_field(row, "degenerate", bool, where),
            seed=_field(row, "seed", int, where),
            method=SLCAIMethod(method),
            principle_id=principle_id,
        )


def _optional_text(row: Mapping[str, Any], name: str, where: str) -> str | None:
    value = row.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: field {name!r} must be a string or null, got {type(value).__name__}")
    return value


def _field(row: Any, name: str, kind: type, where: str) -> Any:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
    if name not in row:
        raise ValueError(f"{where}: missing field {name!r}")
    value = row[name]
    # bool is an int subclass: a flag where a count is expected (or back) is a type error.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class CritiqueTask:
    """Ask for a critique of `answer` (the latest usable answer to `prompt`) against `principle`."""

    record_id: str
    prompt: str
    answer: str
    principle: Principle


@dataclass(frozen=True)
class RevisionTask:
    """Ask for a revision of `answer` given the `critique` the model wrote against `principle`."""

    record_id: str
    prompt: str
    answer: str
    principle: Principle
    critique: str


@dataclass(frozen=True)
class ContextTask:
    """Answer `prompt` with `principle`'s guideline and the exemplars in context (context distillation)."""

    record_id: str
    prompt: str
    principle: Principle


def principle_for(constitution: Constitution, seed: int, record_id: str, round_index: int) -> Principle:
    """The principle of one round: seeded by (seed, record id, round), whatever the batch or worker."""
    return sample_principles(constitution, 1, seed, key=f"{record_id}:{round_index}")[0]


# --- chat rendering ---------------------------------------------------------


def few_shot_preamble(examples: Sequence[CritiqueExample]) -> tuple[Turn, ...]:
    """The few-shot examples as earlier chat turns, six per example.

    user prompt -> assistant response -> user critique request -> assistant critique
    -> user revision request -> assistant revision. The paper found such examples
    keep small models from confusing critiques with revisions (§3.1).
    """
    turns: list[Turn] = []
    for ex in examples:
        turns += [
            Turn("user", ex.prompt),
            Turn("assistant", ex.response),
            Turn("user", ex.critique_request),
            Turn("assistant", ex.critique),
            Turn("user", ex.revision_request),
            Turn("assistant", ex.revision),
        ]
    return tuple(turns)


def context_turns(exemplars: Sequence[Exemplar], principle: Principle | None) -> tuple[Turn, ...]:
    """The in-context setting that comes before a prompt: the principle, then the exemplars.

    A system turn states the principle's ``guideline`` (none when it has none, or no
    principle is given), and each exemplar follows as a user request and the assistant's
    answer. A prompt answered after these turns is answered in the constitution's manner;
    context distillation trains on the bare prompt -> that answer (Askell et al. 2021,
    arXiv 2112.00861), and contrastive pairs contrast it with an answer given without
    them (Yang et al. 2023, RLCD, arXiv 2307.12950). The exemplars come in file order
    and the system turn is the same for every prompt under one principle, so the
    engine's prefix cache serves the whole setting once per principle.
    """
    turns = [Turn("system", principle.guideline)] if principle is not None and principle.guideline else []
    for exemplar in exemplars:
        turns += [Turn("user", exemplar.prompt), Turn("assistant", exemplar.response)]
    return tuple(turns)


def context_messages(setting: Sequence[Turn], prompt: str) -> list[Turn]:
    """The in-context setting (`context_turns`), then the user's prompt; the model writes the answer.

    The setting comes first and is shared by every prompt under one principle, so the
    engine's prefix cache computes it once per principle.
    """
    return [*setting, Turn("user", prompt)]


def critique_messages(preamble: Sequence[Turn], task: CritiqueTask) -> list[Turn]:
    """Preamble, then the real exchange ending in the critique request; the model writes the critique."""
    return [
        *preamble,
        Turn("user", task.prompt),
        Turn("assistant", task.answer),
        Turn("user", task.principle.critique_request),
    ]


def revision_messages(preamble: Sequence[Turn], task: RevisionTask) -> list[Turn]:
    """The critique conversation extended by the critique and the revision request.

    It starts with the exact critique conversation, so the prefix cached for the
    critique call serves this one too.
    """
    critique = CritiqueTask(task.record_id, task.prompt, task.answer, task.principle)
    return [
        *critique_messages(preamble, critique),
        Turn("assistant", task.critique),
        Turn("user", task.principle.revision_request),
    ]


# --- degenerate revisions ---------------------------------------------------

MIN_WORDS = 3
ECHO_NGRAM = 8
REPEAT_MIN_WORDS = 12
REPEAT_MAX_DUPLICATE_FRACTION = 0.5
_WORD = re.compile(r"[a-z0-9']+")
_META_OPENINGS = {("the", "response"), ("this", "response"), ("the", "assistant's", "response")}


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def degeneracy_reason(text: str, original: str, echoes: Sequence[str] = ()) -> str | None:
    """Why a revision is unusable for SFT, or None if it is usable. The rule, in order:

    - ``"empty"``: no word characters at all (empty or whitespace/punctuation only);
    - ``"too_short"``: fewer than `MIN_WORDS` (3) words;
    - ``"unchanged"``: the same words as `original`, the answer it was meant to revise
      (case, spacing and punctuation ignored);
    - ``"echo"``: it contains a run of `ECHO_NGRAM` (8) consecutive words of one of
      `echoes` (the critique request, the revision request, the critique): the model
      repeated its instructions or its critique instead of rewriting the answer;
    - ``"meta"``: it opens by describing the response ("The response …", "This
      response …", "The assistant's response …") instead of being one, as weak models
      do when they keep critiquing instead of rewriting;
    - ``"repetitive"``: at least `REPEAT_MIN_WORDS` (12) words and more than half of
      its word trigrams are repeats of earlier ones (a decoding loop).
    """
    words = _words(text)
    if not words:
        return "empty"
    if len(words) < MIN_WORDS:
        return "too_short"
    if words == _words(original):
        return "unchanged"
    grams = set(_ngrams(words, ECHO_NGRAM))
    for echo in echoes:
        if grams.intersection(_ngrams(_words(echo), ECHO_NGRAM)):
            return "echo"
    if tuple(words[:2]) in _META_OPENINGS or tuple(words[:3]) in _META_OPENINGS:
        return "meta"
    if len(words) >= REPEAT_MIN_WORDS:
        trigrams = _ngrams(words, 3)
        duplicates = len(trigrams) - len(set(trigrams))
        if duplicates / len(trigrams) > REPEAT_MAX_DUPLICATE_FRACTION:
            return "repetitive"
    return None


def is_degenerate(text: str, original: str, echoes: Sequence[str] = ()) -> bool:
    """True when `degeneracy_reason` finds a reason (see there for the rule)."""
    return degeneracy_reason(text, original, echoes) is not None


def context_degeneracy(answer: str, setting: Sequence[Turn]) -> str | None:
    """Why an answer given after the in-context `setting` is unusable for SFT, or None.

    `degeneracy_reason` with no original to compare against (``"unchanged"`` cannot
    apply) and every text of the setting as an echo: an answer that repeats eight words
    in a row of the guideline or of an exemplar has copied the context (a small model's
    habit, often an exemplar's answer to a different request) instead of answering.
    """
    return degeneracy_reason(answer, "", tuple(turn.content for turn in setting))


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def build_record(
    record_id: str,
    prompt: str,
    category: str | None,
    first_answer: str,
    rounds: Sequence[RevisionRound],
    seed: int,
) -> SLCAIRecord:
    """A finished chain: the final answer is the last non-degenerate revision, if any."""
    usable = [r.revision for r in rounds if not r.degenerate]
    final = usable[-1] if usable else first_answer
    return SLCAIRecord(record_id, prompt, category, first_answer, tuple(rounds), final, not usable, seed)


def distilled_record(
    record_id: str,
    prompt: str,
    category: str | None,
    principle_id: str,
    answer: str,
    degenerate: bool,
    seed: int,
) -> SLCAIRecord:
    """A context-distillation record: the answer given in context is the one SFT learns."""
    return SLCAIRecord(
        record_id,
        prompt,
        category,
        first_answer=answer,
        rounds=(),
        final_answer=answer,
        degenerate=degenerate,
        seed=seed,
        method=SLCAIMethod.CONTEXT_DISTILLATION,
        principle_id=principle_id,
    )


def latest_answer(first_answer: str, rounds: Iterable[RevisionRound]) -> str:
    """What the next round critiques: the last non-degenerate revision, else the first answer."""
    answer = first_answer
    for r in rounds:
        if not r.degenerate:
            answer = r.revision
    return answer


# --- SFT mix ----------------------------------------------------------------


@dataclass(frozen=True)
class SFTSample:
    """One supervised example: a bare user prompt and the assistant response to learn.

    `source` is ``"revision"`` (an SL-CAI record's final answer: a final revision, or
    under context distillation the answer given in context), ``"helpful"`` or ``"sensitive"``
    (plain answers to benign prompts).
    """

    id: str
    prompt: str
    response: str
    source: str


def sft_samples(records: Iterable[SLCAIRecord]) -> list[SFTSample]:
    """Final answers of the non-degenerate records, with ids ``rev:<record id>``.

    The prompt is the record's bare prompt, whatever the method: context distillation
    trains the model to give, without the setting, the answer it gave with it.
    """
    return [SFTSample(f"rev:{r.id}", r.prompt, r.final_answer, "revision") for r in records if not r.degenerate]


def _rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()


def mix_sft(
    revisions: Sequence[SFTSample], helpful: Sequence[SFTSample], helpful_ratio: float, seed: int
) -> list[SFTSample]:
    """Revisions plus ``round(helpful_ratio * len(revisions))`` helpful samples, shuffled.

    Which helpful samples are taken, and the order of the mix, are decided by
    ``sha256(f"{seed}:{id}")`` of each sample alone: the same ids and seed give the
    same list in any input order, and growing a set never reshuffles the others.
    Asking for more helpful samples than exist takes them all. Duplicate ids are an
    error (they would be trained on twice).
    """
    if helpful_ratio < 0:
        raise ValueError(f"helpful_ratio must be >= 0, got {helpful_ratio}")
    wanted = min(len(helpful), round(helpful_ratio * len(revisions)))
    chosen = sorted(helpful, key=lambda s: _rank(seed, s.id))[:wanted]
    mixed = [*revisions, *chosen]
    seen: set[str] = set()
    for sample in mixed:
        if sample.id in seen:
            raise ValueError(f"SFT mix: duplicate sample id {sample.id!r}")
        seen.add(sample.id)
    return sorted(mixed, key=lambda s: _rank(seed, "order:" + s.id))


def sft_batch(samples: Sequence[SFTSample], step: int, batch_size: int, seed: int) -> list[SFTSample]:
    """The global batch of optimizer step `step` (from 0), cycling through `samples` in passes.

    The samples form an endless stream: pass ``e`` is every sample once, ordered by
    ``sha256(f"{seed}:{e}:{id}")``; step ``k`` takes stream items ``[k*b, (k+1)*b)``.
    A batch depends only on (samples, step, batch_size, seed), so a run resumed at
    step ``k`` trains on exactly the batches it would have.
    """
    if not samples:
        raise ValueError("sft_batch: no samples")
    if step < 0 or batch_size < 1:
        raise ValueError(f"sft_batch: need step >= 0 and batch_size >= 1, got {step}, {batch_size}")
    n = len(samples)
    orders: dict[int, list[SFTSample]] = {}
    batch = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, index = divmod(position, n)
        if epoch not in orders:
            orders[epoch] = sorted(samples, key=lambda s: _rank(seed, f"{epoch}:{s.id}"))
        batch.append(orders[epoch][index])
    return batch
