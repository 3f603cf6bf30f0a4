"""Atomic stage outputs and manifests (docs/design.md §4)."""

import json
from pathlib import Path

import pytest

from rlaif.core.io import append_jsonl, read_jsonl, read_manifest, write_jsonl, write_manifest


def test_write_jsonl_round_trips_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    n = write_jsonl(tmp_path / "s" / "r.jsonl", [{"id": "a", "x": 1}, {"id": "b", "x": "é"}])
    assert n == 2
    assert list(read_jsonl(tmp_path / "s" / "r.jsonl")) == [{"id": "a", "x": 1}, {"id": "b", "x": "é"}]
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["r.jsonl"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_jsonl(path, [{"id": "old"}])
    with pytest.raises(TypeError):
        write_jsonl(path, [{"id": object()}])
    assert list(read_jsonl(path)) == [{"id": "old"}]


def test_torn_last_line_is_skipped_only_when_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "shard.jsonl"
    append_jsonl(path, [{"id": "a"}])
    with path.open("a") as f:
        f.write('{"id": "b", "x"')  # a kill mid-write
    assert [r["id"] for r in read_jsonl(path, tolerate_torn_tail=True)] == ["a"]
    with pytest.raises(ValueError, match="line 2"):
        list(read_jsonl(path))


def test_manifest_marks_the_stage_done(tmp_path: Path) -> None:
    stage = tmp_path / "sl_cai"
    assert read_manifest(stage) is None
    write_manifest(stage, {"records": 3}, {"seed": 1})
    manifest = read_manifest(stage)
    assert manifest is not None and manifest["counts"] == {"records": 3} and manifest["stage"] == "sl_cai"
    assert json.loads((stage / "MANIFEST.json").read_text())["config"] == {"seed": 1}


def test_written_files_get_the_usual_permissions_not_private_ones(tmp_path: Path) -> None:
    import os

    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        umask = os.umask(mask)
        try:
            write_jsonl(tmp_path / "r.jsonl", [{"id": "a"}])
            # Writing leaves the process umask as it found it.
            assert os.umask(mask) == mask
        finally:
            os.umask(umask)
        assert (tmp_path / "r.jsonl").stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]  # no temporary file left behind
