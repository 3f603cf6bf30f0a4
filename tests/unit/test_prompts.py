"""Unit tests for rlaif.core.prompts: shipped data, loaders, hh parsing, the split."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from rlaif.core.prompts import (
    DatasetError,
    PromptRecord,
    builtin_prompts_path,
    first_human_turn,
    load_hh_rlhf,
    load_jsonl,
    load_parquet,
    load_prompts,
    load_text,
    split_train_heldout,
    stable_id,
)


def _jsonl(tmp_path: Path, lines: list[str], name: str = "p.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- shipped prompt sets ---------------------------------------------------------


@pytest.mark.parametrize("name", ["red_team", "helpful"])
def test_builtin_sets(name: str) -> None:
    records = load_prompts(f"builtin:{name}")
    assert len(records) >= 200
    assert len({r.id for r in records}) == len(records)
    assert len({r.prompt for r in records}) == len(records)
    prefix = {"red_team": "rt-", "helpful": "hp-"}[name]
    assert all(r.id.startswith(prefix) and r.category for r in records)
    # "One or two sentences": nothing long.
    assert max(len(r.prompt) for r in records) < 200
    raw = builtin_prompts_path(name).read_text(encoding="utf-8").splitlines()
    assert len(raw) == len(records)


def test_red_team_categories() -> None:
    counts = Counter(r.category for r in load_prompts("builtin:red_team"))
    assert len(counts) >= 10
    assert min(counts.values()) >= 10


def test_unknown_builtin() -> None:
    with pytest.raises(DatasetError, match="unknown builtin prompt set 'nope'"):
        load_prompts("builtin:nope")


# --- ids ---------------------------------------------------------------------------


def test_stable_id() -> None:
    assert stable_id("hello") == stable_id("hello")
    assert stable_id("hello") != stable_id("hello ")
    assert len(stable_id("x")) == 16
    int(stable_id("x"), 16)  # hex


# --- JSONL loader -----------------------------------------------------------------


def test_jsonl_reads_records(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path,
        [
            '{"id": "a", "prompt": "Hi there", "category": "greet"}',
            "",
            '{"prompt": "No id here"}',
            '{"id": 7, "prompt": "Numeric id"}',
        ],
    )
    records = load_jsonl(path)
    assert records == (
        PromptRecord("a", "Hi there", "greet"),
        PromptRecord(stable_id("No id here"), "No id here", None),
        PromptRecord("7", "Numeric id", None),
    )


def test_jsonl_custom_fields(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, ['{"uid": "u1", "text": "Question?"}'])
    assert load_jsonl(path, prompt_field="text", id_field="uid") == (PromptRecord("u1", "Question?", None),)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", "line 2: invalid JSON"),
        ('["a list"]', "line 2: expected a JSON object, got list"),
        ('{"id": "b"}', "line 2: missing field 'prompt'"),
        ('{"id": "b", "prompt": "  "}', "line 2: field 'prompt' is empty"),
        ('{"id": "b", "prompt": 3}', "line 2: field 'prompt' must be a string"),
        ('{"id": "a", "prompt": "again"}', "line 2: duplicate id 'a' (first at line 1)"),
        ('{"id": "", "prompt": "x"}', "line 2: field 'id' is empty"),
        ('{"prompt": "x", "category": 5}', "line 2: field 'category' must be a string or null"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, bad_line: str, expected: str) -> None:
    path = _jsonl(tmp_path, ['{"id": "a", "prompt": "fine"}', bad_line])
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_jsonl_repeated_prompt_without_id_is_deduplicated(tmp_path: Path) -> None:
    # Same text -> same derived id -> the same record, kept once.
    path = _jsonl(tmp_path, ['{"prompt": "same"}', '{"prompt": "other"}', '{"prompt": "same"}'])
    assert [r.prompt for r in load_jsonl(path)] == ["same", "other"]


def test_jsonl_explicit_id_clashing_with_derived_id(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, ['{"prompt": "same"}', f'{{"id": "{stable_id("same")}", "prompt": "x"}}'])
    with pytest.raises(DatasetError, match="line 2: duplicate id"):
        load_jsonl(path)


def test_jsonl_empty_file(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [""])
    with pytest.raises(DatasetError, match="^" + re.escape(f"{path}: no records") + "$"):
        load_jsonl(path)


def test_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read file"):
        load_jsonl(tmp_path / "absent.jsonl")


# --- Parquet loader ---------------------------------------------------------------


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    records = load_prompts("builtin:red_team")[:20]
    table = pa.table(
        {
            "id": [r.id for r in records],
            "prompt": [r.prompt for r in records],
            "category": [r.category for r in records],
        }
    )
    path = tmp_path / "p.parquet"
    pq.write_table(table, path)
    assert load_prompts(str(path)) == records  # auto-detected by suffix
    assert load_parquet(path) == records


def test_parquet_errors_name_row(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["ok", ""]}), path)
    with pytest.raises(DatasetError, match="^" + re.escape(f"{path}: row 2: field 'prompt' is empty")):
        load_parquet(path)
    pq.write_table(pa.table({"text": ["ok"]}), path)
    with pytest.raises(DatasetError, match="no column 'prompt'"):
        load_parquet(path)


# --- hh-rlhf ----------------------------------------------------------------------


def test_first_human_turn_multi_turn() -> None:
    text = (
        "\n\nHuman: How do I bake bread?\nI have flour."
        "\n\nAssistant: Start with yeast."
        "\n\nHuman: What about salt?"
        "\n\nAssistant: A teaspoon."
    )
    assert first_human_turn(text) == "How do I bake bread?\nI have flour."


def test_first_human_turn_variants() -> None:
    assert first_human_turn("Human: hi\n\nAssistant: hello") == "hi"
    assert first_human_turn("\n\nHuman: only a question") == "only a question"
    with pytest.raises(DatasetError, match="no 'Human:' turn"):
        first_human_turn("\n\nAssistant: hello")
    with pytest.raises(DatasetError, match="empty"):
        first_human_turn("\n\nHuman:   \n\nAssistant: hello")


def test_load_hh_rlhf_local_jsonl(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    rows = [
        {"chosen": "\n\nHuman: Q one?\n\nAssistant: A.", "rejected": "\n\nHuman: Q one?\n\nAssistant: B."},
        {"chosen": "\n\nHuman: Q two?\n\nAssistant: A.", "rejected": "\n\nHuman: Q two?\n\nAssistant: B."},
        {"chosen": "\n\nHuman: Q one?\n\nAssistant: C.", "rejected": "\n\nHuman: Q one?\n\nAssistant: D."},
    ]
    path = _jsonl(tmp_path, [json.dumps(r) for r in rows], name="hh.jsonl")
    records = load_hh_rlhf(path, split="test", cache_dir=tmp_path / "cache")
    assert [r.prompt for r in records] == ["Q one?", "Q two?"]
    assert records[0].id == stable_id("Q one?")


def test_load_hh_rlhf_bad_row_names_row(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    rows = [{"chosen": "\n\nHuman: fine\n\nAssistant: ok"}, {"chosen": "\n\nAssistant: no human turn"}]
    path = _jsonl(tmp_path, [json.dumps(r) for r in rows], name="hh.jsonl")
    with pytest.raises(DatasetError, match=r"hh\.jsonl: row 2: no 'Human:' turn"):
        load_hh_rlhf(path, cache_dir=tmp_path / "cache")


def test_unknown_kind() -> None:
    with pytest.raises(DatasetError, match="unknown kind 'csv'"):
        load_prompts("x.csv", kind="csv")


# --- split ------------------------------------------------------------------------


def _records(n: int, start: int = 0) -> list[PromptRecord]:
    return [PromptRecord(f"r{i}", f"prompt {i}") for i in range(start, start + n)]


def test_split_fraction_roughly_right() -> None:
    train, heldout = split_train_heldout(_records(1000), heldout_fraction=0.1, seed=0)
    assert len(train) + len(heldout) == 1000
    # Binomial(1000, 0.1): sd ~9.5, so 60..140 is beyond 4 sigma.
    assert 60 < len(heldout) < 140


def test_split_is_stable_under_growth_and_order() -> None:
    base = _records(500)
    _, held = split_train_heldout(base, 0.2, seed=3)
    grown = list(reversed(base + _records(500, start=500)))
    _, held_grown = split_train_heldout(grown, 0.2, seed=3)
    assert {r.id for r in held} == {r.id for r in held_grown if int(r.id[1:]) < 500}


def test_split_depends_on_seed_and_edges() -> None:
    records = _records(200)
    a = split_train_heldout(records, 0.5, seed=0)[1]
    b = split_train_heldout(records, 0.5, seed=1)[1]
    assert a != b
    assert split_train_heldout(records, 0.0, seed=0) == (tuple(records), ())
    assert split_train_heldout(records, 1.0, seed=0) == ((), tuple(records))
    with pytest.raises(ValueError):
        split_train_heldout(records, 1.5, seed=0)


def test_load_text_one_prompt_a_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("How do I bake bread?\n\n  How do I pick a lock?  \nHow do I bake bread?\n", encoding="utf-8")
    records = load_prompts(path)  # .txt picks the plain-text loader
    # The blank line is skipped, the repeated prompt is one record, text is stripped.
    assert [r.prompt for r in records] == ["How do I bake bread?", "How do I pick a lock?"]
    assert records[0].id == stable_id("How do I bake bread?")


def test_load_text_names_file_and_line_of_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(DatasetError, match=r"prompts\.txt: line 2: not UTF-8 text"):
        load_text(path)
    with pytest.raises(DatasetError, match=r"missing\.txt: cannot read file"):
        load_prompts(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match=r"empty\.txt: no records"):
        load_text(empty)
