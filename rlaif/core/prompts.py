"""Prompt datasets: typed records, loaders and a stable train/held-out split.

SL-CAI answers red-team prompts and mixes in helpfulness prompts; RL-CAI
samples on red-team prompts again (docs/design.md §1). Every prompt becomes a
``PromptRecord`` with a stable id, so stages can resume and retry without
losing or duplicating records (docs/design.md §4).

    from rlaif.core.prompts import load_prompts, split_train_heldout
    records = load_prompts("builtin:red_team")          # shipped JSONL
    records = load_prompts("runs/x/prompts.parquet")     # by file suffix
    records = load_prompts("my_prompts.txt")             # plain text, one prompt a line
    records = load_prompts("Anthropic/hh-rlhf", data_dir="harmless-base")
    train, heldout = split_train_heldout(records, heldout_fraction=0.05, seed=0)

``pyarrow`` and ``datasets`` are imported only inside the loaders that need them.
Bad input raises ``DatasetError`` naming the source and line (or row).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUILTIN_PROMPT_SETS",
    "DatasetError",
    "PromptRecord",
    "builtin_prompts_path",
    "first_human_turn",
    "load_hh_rlhf",
    "load_jsonl",
    "load_parquet",
    "load_prompts",
    "load_text",
    "split_train_heldout",
    "stable_id",
]

BUILTIN_PROMPT_SETS = ("red_team", "helpful", "sensitive", "sensitive_harmful")
"""The shipped sets in ``rlaif/data/prompts`` (its README is their data card)."""
_BUILTIN_PREFIX = "builtin:"
_KINDS = ("auto", "jsonl", "parquet", "text", "hh_rlhf")


class DatasetError(ValueError):
    """A prompt source is missing, malformed or yields no usable records."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt with a stable id; ``category`` is the harm/topic tag if known."""

    id: str
    prompt: str
    category: str | None = None


def stable_id(text: str) -> str:
    """A 16-hex-digit id from sha256 of the UTF-8 text.

    Fixed length, so no id is a prefix of another; 64 bits keep collisions
    negligible at hh-rlhf scale (~1e-9 for 3e5 prompts).
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def builtin_prompts_path(name: str) -> Path:
    """Path of a prompt set shipped in ``rlaif/data/prompts``: one of `BUILTIN_PROMPT_SETS`."""
    if name not in BUILTIN_PROMPT_SETS:
        raise DatasetError(f"unknown builtin prompt set {name!r}; known: {', '.join(BUILTIN_PROMPT_SETS)}")
    return Path(__file__).resolve().parents[1] / "data" / "prompts" / f"{name}.jsonl"


# --- shared row validation --------------------------------------------------


def _records_from_rows(
    rows: Iterable[tuple[str, Any]],
    source: str,
    prompt_field: str,
    id_field: str,
    category_field: str,
) -> tuple[PromptRecord, ...]:
    """Validate ``(location, row)`` pairs into records.

    An explicit id seen twice is an error. A row without an id gets
    ``stable_id(prompt)``; a repeat of such a derived id means the same prompt
    text again, which is the same record, so it is dropped (hh-rlhf repeats
    first turns across conversations).
    """
    records: list[PromptRecord] = []
    first_seen: dict[str, tuple[str, bool]] = {}  # id -> (location, explicit)
    for loc, row in rows:
        where = f"{source}: {loc}"
        if not isinstance(row, Mapping):
            raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
        prompt = row.get(prompt_field)
        if prompt is None:
            raise DatasetError(f"{where}: missing field {prompt_field!r}")
        if not isinstance(prompt, str):
            raise DatasetError(f"{where}: field {prompt_field!r} must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise DatasetError(f"{where}: field {prompt_field!r} is empty")
        record_id, explicit = _row_id(row.get(id_field), prompt, where, id_field)
        if record_id in first_seen:
            first_loc, first_explicit = first_seen[record_id]
            if not (explicit or first_explicit):
                continue
            raise DatasetError(f"{where}: duplicate id {record_id!r} (first at {first_loc})")
        first_seen[record_id] = (loc, explicit)
        category = row.get(category_field)
        if category is not None and not isinstance(category, str):
            raise DatasetError(
                f"{where}: field {category_field!r} must be a string or null, got {type(category).__name__}"
            )
        records.append(PromptRecord(record_id, prompt, category or None))
    if not records:
        raise DatasetError(f"{source}: no records")
    return tuple(records)


def _row_id(raw: Any, prompt: str, where: str, id_field: str) -> tuple[str, bool]:
    """The row's id and whether it was given explicitly (ints are accepted as text)."""
    if raw is None:
        return stable_id(prompt), False
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise DatasetError(f"{where}: field {id_field!r} must be a string, got {type(raw).__name__}")
    text = str(raw).strip()
    if not text:
        raise DatasetError(f"{where}: field {id_field!r} is empty")
    return text, True


# --- loaders ----------------------------------------------------------------


def load_jsonl(
    path: str | Path,
    prompt_field: str = "prompt",
    id_field: str = "id",
    category_field: str = "category",
) -> tuple[PromptRecord, ...]:
    """Read prompts from a JSON-lines file, one object per line; blank lines are skipped."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise DatasetError(f"{source}: cannot read file: {reason}") from e

    def rows() -> Iterator[tuple[str, Any]]:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{source}: line {number}: invalid JSON: {e.msg}") from e

    return _records_from_rows(rows(), source, prompt_field, id_field, category_field)


def load_text(path: str | Path) -> tuple[PromptRecord, ...]:
    """Read prompts from a plain-text file, one prompt a line (stripped); blank lines are skipped.

    Ids are ``stable_id(prompt)``, so a repeated line is one record. A file that is not
    UTF-8 text (a binary file given by mistake) fails naming the line it breaks on.
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DatasetError(f"{source}: cannot read file: {e.strerror or e}") from e

    def rows() -> Iterator[tuple[str, Any]]:
        for number, raw in enumerate(data.splitlines(), start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(f"{source}: line {number}: not UTF-8 text ({e.reason})") from e
            if "\x00" in line:
                raise DatasetError(f"{source}: line {number}: holds a NUL byte (a binary file?)")
            if line.strip():
                yield f"line {number}", {"prompt": line.strip()}

    return _records_from_rows(rows(), source, "prompt", "id", "category")


def load_parquet(
    path: str | Path,
    prompt_field: str = "prompt",
    id_field: str = "id",
    category_field: str = "category",
) -> tuple[PromptRecord, ...]:
    """Read prompts from a Parquet file; errors name rows counted from 1."""
    import pyarrow.parquet as pq  # lazy: optional dependency, heavy import

    source = str(path)
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DatasetError(f"{source}: cannot read Parquet file: {e}") from e
    if prompt_field not in table.column_names:
        raise DatasetError(f"{source}: no column {prompt_field!r} (columns: {', '.join(table.column_names)})")
    rows = ((f"row {i}", row) for i, row in enumerate(table.to_pylist(), start=1))
    return _records_from_rows(rows, source, prompt_field, id_field, category_field)


_HUMAN_TURN = re.compile(r"(?:\A|\n\n)Human:(.*?)(?=\n\nAssistant:|\n\nHuman:|\Z)", re.DOTALL)


def first_human_turn(text: str) -> str:
    """The first human turn of an hh-rlhf conversation ``"\\n\\nHuman: … \\n\\nAssistant: …"``.

    Raises ``DatasetError`` if there is no (non-empty) human turn.
    """
    match = _HUMAN_TURN.search(text)
    if match is None:
        raise DatasetError("no 'Human:' turn in conversation text")
    turn = match.group(1).strip()
    if not turn:
        raise DatasetError("first 'Human:' turn is empty")
    return turn


def load_hh_rlhf(
    dataset_name_or_path: str | Path,
    split: str = "train",
    text_field: str = "chosen",
    data_dir: str | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[PromptRecord, ...]:
    """Prompts from an hh-rlhf-format dataset: the first human turn of each row.

    ``dataset_name_or_path`` is a Hugging Face hub id (e.g. ``Anthropic/hh-rlhf``
    with ``data_dir="harmless-base"`` for red-team prompts), a local folder, or a
    local ``.jsonl``/``.json`` file (read as the given ``split``). Ids are
    ``stable_id(prompt)``; repeated first turns collapse to one record.
    ``cache_dir`` overrides the ``datasets`` cache (default: ``HF_DATASETS_CACHE``).
    """
    import datasets  # lazy: optional dependency, heavy import

    source = str(dataset_name_or_path)
    local = Path(dataset_name_or_path)
    cache = None if cache_dir is None else str(cache_dir)
    try:
        if local.is_file():
            ds = datasets.load_dataset("json", data_files={split: str(local)}, split=split, cache_dir=cache)
        else:
            ds = datasets.load_dataset(source, data_dir=data_dir, split=split, cache_dir=cache)
    except Exception as e:  # datasets raises many unrelated types for a bad source
        raise DatasetError(f"{source}: cannot load split {split!r}: {e}") from e
    if text_field not in ds.column_names:
        raise DatasetError(f"{source}: no column {text_field!r} (columns: {', '.join(ds.column_names)})")

    def rows() -> Iterator[tuple[str, Any]]:
        for i, text in enumerate(ds[text_field], start=1):
            if not isinstance(text, str):
                raise DatasetError(f"{source}: row {i}: field {text_field!r} is not a string")
            try:
                yield f"row {i}", {"prompt": first_human_turn(text)}
            except DatasetError as e:
                raise DatasetError(f"{source}: row {i}: {e}") from e

    return _records_from_rows(rows(), source, "prompt", "id", "category")


def load_prompts(
    source: str | Path,
    kind: str = "auto",
    prompt_field: str = "prompt",
    id_field: str = "id",
    category_field: str = "category",
    split: str = "train",
    data_dir: str | None = None,
) -> tuple[PromptRecord, ...]:
    """Load prompts from ``builtin:red_team``/``builtin:helpful``, a file, or a dataset.

    ``kind="auto"`` picks by form: ``builtin:`` names and ``.jsonl`` files are
    JSON lines, ``.parquet`` files Parquet, ``.txt`` files plain text (one prompt
    a line), anything else hh-rlhf via ``datasets``. ``split``/``data_dir`` apply to hh-rlhf only; the field names
    to JSONL and Parquet only.
    """
    if kind not in _KINDS:
        raise DatasetError(f"{source}: unknown kind {kind!r}; expected one of {', '.join(_KINDS)}")
    text = str(source)
    path: str | Path = source
    if text.startswith(_BUILTIN_PREFIX):
        path = builtin_prompts_path(text[len(_BUILTIN_PREFIX) :])
        if kind == "auto":
            kind = "jsonl"
    if kind == "auto":
        suffix = Path(text).suffix.lower()
        kind = {".jsonl": "jsonl", ".parquet": "parquet", ".txt": "text"}.get(suffix, "hh_rlhf")
    if kind == "jsonl":
        return load_jsonl(path, prompt_field, id_field, category_field)
    if kind == "parquet":
        return load_parquet(path, prompt_field, id_field, category_field)
    if kind == "text":
        return load_text(path)
    return load_hh_rlhf(path, split=split, data_dir=data_dir)


def split_train_heldout(
    records: Iterable[PromptRecord], heldout_fraction: float, seed: int
) -> tuple[tuple[PromptRecord, ...], tuple[PromptRecord, ...]]:
    """Split records into (train, heldout), keeping input order within each.

    A record is held out iff ``sha256(f"{seed}:{id}")``, read as a fraction in
    [0, 1), is below ``heldout_fraction``: its side depends only on its own id
    and the seed, never on the other records or their order, so growing a
    dataset never moves an existing prompt across the split.
    """
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
    train: list[PromptRecord] = []
    heldout: list[PromptRecord] = []
    for record in records:
        digest = hashlib.sha256(f"{seed}:{record.id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        (heldout if u < heldout_fraction else train).append(record)
    return tuple(train), tuple(heldout)
