"""Unit tests for rlaif.core.resume: step logs survive torn lines, retries and changed settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlaif.core.resume import StepLog


def test_rows_by_id_first_wins_and_a_torn_tail_is_dropped_before_appending(tmp_path: Path) -> None:
    log = StepLog(tmp_path, {"rounds": 2})
    log.append("answers", [{"id": "a", "text": "1"}, {"id": "b", "text": "2"}])
    # A retried chunk writes "b" again; the first row stays.
    log.append("answers", [{"id": "b", "text": "retry"}])
    with log.path("answers").open("a") as f:
        f.write('{"id": "c", "te')  # killed mid-line
    assert {k: v["text"] for k, v in log.rows("answers").items()} == {"a": "1", "b": "2"}
    log.append("answers", [{"id": "c", "text": "3"}])
    assert {k: v["text"] for k, v in log.rows("answers").items()} == {"a": "1", "b": "2", "c": "3"}
    assert log.rows("never-run") == {}


def test_torn_tail_longer_than_a_read_block_is_cut_at_the_last_newline(tmp_path: Path) -> None:
    from rlaif.core.resume import drop_torn_tail

    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"id": "a"}\n' + b"z" * 100)
    drop_torn_tail(path, block=16)
    assert path.read_bytes() == b'{"id": "a"}\n'
    path.write_bytes(b"no newline at all")
    drop_torn_tail(path, block=4)
    assert path.read_bytes() == b""


def test_other_settings_refuse_to_resume(tmp_path: Path) -> None:
    StepLog(tmp_path, {"rounds": 2})
    StepLog(tmp_path, {"rounds": 2})  # same settings: fine
    with pytest.raises(ValueError, match="partial run made with other settings"):
        StepLog(tmp_path, {"rounds": 3})


def test_a_row_without_an_id_names_the_file_and_row(tmp_path: Path) -> None:
    log = StepLog(tmp_path, {})
    log.append("s", [{"id": "a"}, {"text": "no id"}])
    with pytest.raises(ValueError, match=r"s\.jsonl: row 2 has no string field 'id'"):
        log.rows("s")
