"""The constitution: principles and few-shot examples for Constitutional AI.

A constitution is a YAML file (see ``constitutions/default.yaml``) holding the
principles that SL-CAI critiques and revises against and that the RL-CAI judge
compares responses by (Bai et al. 2022, arXiv 2212.08073, §3.1 and §4.1), plus
the few-shot examples that teach a small model the critique/revision format.

    from rlaif.core.constitution import load_constitution, default_constitution_path
    c = load_constitution(default_constitution_path())
    principle = sample_principles(c, n=1, seed=0, key="rt-0001:round0")[0]

Loading validates the whole file and raises ``ConstitutionError`` with a
one-line message naming the file and the offending entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "Constitution",
    "ConstitutionError",
    "CritiqueExample",
    "Exemplar",
    "ExemplarKind",
    "JudgeExample",
    "Principle",
    "default_constitution_path",
    "load_constitution",
    "sample_principles",
]


class ConstitutionError(ValueError):
    """A constitution file is missing, unparsable or fails validation."""


@dataclass(frozen=True)
class Principle:
    """One constitutional principle, used by both CAI stages.

    ``critique_request`` and ``revision_request`` drive an SL-CAI round;
    ``choice_question`` is what the RL-CAI judge is asked about (A) vs (B);
    ``guideline`` states the principle as the assistant's own rule, for the
    in-context setting of context distillation and contrastive pairs (optional in a
    file: empty when absent, and that setting then shows the exemplars alone).
    """

    id: str
    critique_request: str
    revision_request: str
    choice_question: str
    guideline: str = ""


@dataclass(frozen=True)
class CritiqueExample:
    """A complete worked critique -> revision exchange for the SL-CAI preamble."""

    prompt: str
    response: str
    critique_request: str
    critique: str
    revision_request: str
    revision: str


@dataclass(frozen=True)
class JudgeExample:
    """A worked multiple-choice comparison for the judge's preamble."""

    conversation: str
    question: str
    option_a: str
    option_b: str
    answer: str  # "A" or "B"


class ExemplarKind(StrEnum):
    """What an exemplar shows.

    ``harmful``: declining a harmful request; ``benign``: simply helping with a benign one.
    Both are the manner the constitution wants (`Constitution.wanted_exemplars`).
    ``evasive``: a needless refusal of a sensitive but benign request: the manner it does
    *not* want, never shown as an example to follow; it is only the negative side's context
    of contrastive pairs on sensitive prompts (`Constitution.evasive_exemplars`).
    """

    HARMFUL = "harmful"
    BENIGN = "benign"
    EVASIVE = "evasive"


@dataclass(frozen=True)
class Exemplar:
    """A short exchange shown in context: a request and an answer of its `ExemplarKind`.

    For a ``harmful`` request the answer declines and offers a safe, lawful alternative;
    for a ``benign`` one it simply helps. Context distillation (Askell et al. 2021) and
    contrastive pairs (Yang et al. 2023) put these before a prompt so that even a small
    model answers in their manner. An ``evasive`` one declines a benign request: the
    counter-example contrastive pairs use on their negative side.
    """

    kind: str
    prompt: str
    response: str


@dataclass(frozen=True)
class Constitution:
    """A validated constitution: at least one principle, unique ids."""

    name: str
    version: str
    principles: tuple[Principle, ...]
    critique_few_shot: tuple[CritiqueExample, ...]
    judge_few_shot: tuple[JudgeExample, ...]
    exemplars: tuple[Exemplar, ...] = ()

    def principle(self, principle_id: str) -> Principle:
        """The principle with this id; ``KeyError`` listing known ids if absent."""
        for p in self.principles:
            if p.id == principle_id:
                return p
        known = ", ".join(p.id for p in self.principles)
        raise KeyError(f"no principle {principle_id!r} in {self.name!r} (known: {known})")

    @property
    def principle_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.principles)

    def exemplars_of(self, *kinds: ExemplarKind) -> tuple[Exemplar, ...]:
        """The exemplars of these kinds, in file order."""
        return tuple(e for e in self.exemplars if e.kind in kinds)

    @property
    def wanted_exemplars(self) -> tuple[Exemplar, ...]:
        """The exemplars to follow (harmful and benign), in file order: every in-context setting shows these."""
        return self.exemplars_of(ExemplarKind.HARMFUL, ExemplarKind.BENIGN)

    @property
    def evasive_exemplars(self) -> tuple[Exemplar, ...]:
        """The needless refusals, in file order: only ever the negative side's context."""
        return self.exemplars_of(ExemplarKind.EVASIVE)


def default_constitution_path() -> Path:
    """Path of the shipped default constitution, ``<repo>/constitutions/default.yaml``.

    Resolved relative to this file, which works from a source checkout and from
    the editable install the project uses.
    """
    return Path(__file__).resolve().parents[2] / "constitutions" / "default.yaml"


def sample_principles(constitution: Constitution, n: int, seed: int, key: str) -> tuple[Principle, ...]:
    """Draw ``n`` principles uniformly, with replacement, determined by (seed, key).

    Draw ``i`` is ``sha256(f"{seed}:{key}:{i}")`` reduced modulo the number of
    principles, so the principle for a given record id and round is the same in
    every run, whatever the batch order or worker, and the first ``k`` draws do
    not depend on ``n`` (asking for more rounds later keeps the earlier ones).
    Replacement matches the paper: each round picks a fresh random principle,
    which may repeat. Hashing (not ``random``) keeps draws stable across Python
    versions. A 64-bit hash modulo 16 has negligible bias.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    count = len(constitution.principles)
    draws = []
    for i in range(n):
        digest = hashlib.sha256(f"{seed}:{key}:{i}".encode()).digest()
        draws.append(constitution.principles[int.from_bytes(digest[:8], "big") % count])
    return tuple(draws)


# --- loading and validation -------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)

_TOP_REQUIRED = ("name", "version", "principles", "critique_few_shot", "judge_few_shot")
# Keys a file may leave out; the shipped constitution has them all.
_TOP_OPTIONAL = ("exemplars",)
_OPTIONAL_FIELDS = {"guideline"}

_T = TypeVar("_T", Principle, CritiqueExample, JudgeExample, Exemplar)


def load_constitution(path: str | Path) -> Constitution:
    """Read and validate a constitution YAML file.

    Raises ``ConstitutionError`` for an unreadable file, YAML syntax errors (with
    the line number), a non-mapping top level, missing or unknown keys, empty or
    non-string text, zero principles, duplicate principle ids, few-shot
    judge answers other than "A"/"B", and exemplar kinds other than
    ``harmful`` / ``benign``.
    """
    where = str(path)
    data = _read_yaml(Path(path), where)
    if not isinstance(data, dict):
        raise ConstitutionError(f"{where}: top level must be a mapping, got {type(data).__name__}")
    _check_keys(data, _TOP_REQUIRED, where, optional=_TOP_OPTIONAL)
    name = _text(data["name"], where, "name")
    version = data["version"]
    # YAML reads `version: 1` as an int and `1.0` as a float; both mean a label.
    if isinstance(version, bool) or not isinstance(version, (str, int, float)):
        raise ConstitutionError(f"{where}: field 'version' must be a string, got {type(version).__name__}")
    version = _text(str(version), where, "version")

    principles = _entries(data, "principles", Principle, where, "principle")
    if not principles:
        raise ConstitutionError(f"{where}: 'principles' is empty; need at least one")
    first_index: dict[str, int] = {}
    for i, p in enumerate(principles, start=1):
        if p.id in first_index:
            raise ConstitutionError(
                f"{where}: principle #{i} ({p.id!r}): duplicate id, first used by principle #{first_index[p.id]}"
            )
        first_index[p.id] = i

    critiques = _entries(data, "critique_few_shot", CritiqueExample, where, "critique_few_shot")
    judges = _entries(data, "judge_few_shot", JudgeExample, where, "judge_few_shot")
    for i, ex in enumerate(judges, start=1):
        if ex.answer not in ("A", "B"):
            raise ConstitutionError(
                f"{where}: judge_few_shot #{i}: field 'answer' must be 'A' or 'B', got {ex.answer!r}"
            )
    exemplars = _entries(data, "exemplars", Exemplar, where, "exemplar") if "exemplars" in data else ()
    kinds = {k.value for k in ExemplarKind}
    for i, exemplar in enumerate(exemplars, start=1):
        if exemplar.kind not in kinds:
            raise ConstitutionError(
                f"{where}: exemplar #{i}: field 'kind' must be one of {sorted(kinds)}, got {exemplar.kind!r}"
            )
    return Constitution(name, version, principles, critiques, judges, exemplars)


def _read_yaml(path: Path, where: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConstitutionError(f"{where}: cannot read file: {reason}") from e
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConstitutionError(f"{where}: YAML syntax error{line}: {problem}") from e


def _check_keys(
    data: Mapping[Any, Any], required: tuple[str, ...], context: str, optional: tuple[str, ...] = ()
) -> None:
    """Missing keys first (the more useful message), then unknown ones."""
    for key in required:
        if key not in data:
            raise ConstitutionError(f"{context}: missing field {key!r}")
    allowed = (*required, *optional)
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ConstitutionError(
            f"{context}: unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(allowed)}"
        )


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise ConstitutionError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ConstitutionError(f"{where}: field {field!r} is empty")
    return value.strip()


def _entries(data: Mapping[str, Any], key: str, cls: type[_T], where: str, label: str) -> tuple[_T, ...]:
    """Build ``cls`` items from the list ``data[key]``; each item holds exactly its string fields."""
    raw = data[key]
    if not isinstance(raw, list):
        raise ConstitutionError(f"{where}: {key!r} must be a list, got {type(raw).__name__}")
    names = tuple(f.name for f in fields(cls))
    required = tuple(n for n in names if n not in _OPTIONAL_FIELDS)
    optional = tuple(n for n in names if n in _OPTIONAL_FIELDS)
    out = []
    for i, item in enumerate(raw, start=1):
        context = f"{where}: {label} #{i}"
        if not isinstance(item, dict):
            raise ConstitutionError(f"{context}: must be a mapping, got {type(item).__name__}")
        # Name a principle by its id as soon as it has a usable one.
        item_id = item.get("id")
        if isinstance(item_id, str) and item_id.strip():
            context += f" ({item_id.strip()!r})"
        _check_keys(item, required, context, optional=optional)
        values = {name: _text(item[name], context, name) for name in names if name in item}
        out.append(cls(**values))
    return tuple(out)
