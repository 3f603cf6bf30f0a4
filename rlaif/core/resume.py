"""Work-in-progress logs that let a killed stage resume without losing or duplicating records.

A stage that runs in steps (answer, critique round 0, revise round 0, …) appends each
finished chunk of a step to ``<work>/<step>.jsonl`` (flushed and fsynced), one row per
record id. On restart the stage reads which ids each step already has and does only
the rest. A line torn by a kill is ignored; an id written twice (a chunk retried after
its rows were written) counts once, first row wins.

A fingerprint of the settings that shape the outputs is kept beside the logs, so that a
run resumed with different settings fails instead of mixing the two:

    log = StepLog(run_dir / "sl_cai" / "work", fingerprint={"rounds": 2, ...})
    done = log.rows("answers")            # id -> row
    log.append("answers", new_rows)       # after each chunk
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rlaif.core.io import append_jsonl, atomic_write_text, config_hash, read_jsonl

__all__ = ["StepLog", "drop_torn_tail"]

_FINGERPRINT = "fingerprint.json"


class StepLog:
    """Append-only per-step JSONL logs under `directory`, keyed by each row's ``id``."""

    def __init__(self, directory: Path, fingerprint: Mapping[str, Any]) -> None:
        self.directory = directory
        self._check_fingerprint(dict(fingerprint))

    def _check_fingerprint(self, fingerprint: dict[str, Any]) -> None:
        path = self.directory / _FINGERPRINT
        wanted = config_hash(fingerprint)
        if path.is_file():
            found = json.loads(path.read_text(encoding="utf-8")).get("hash")
            if found != wanted:
                raise ValueError(
                    f"{self.directory}: holds a partial run made with other settings (hash {found}, now {wanted}); "
                    "delete that folder or choose another run name"
                )
            return
        payload = {"hash": wanted, "settings": fingerprint}
        atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")

    def path(self, step: str) -> Path:
        return self.directory / f"{step}.jsonl"

    def rows(self, step: str) -> dict[str, dict[str, Any]]:
        """The step's rows by id (first row of an id wins; a torn last line is skipped)."""
        path = self.path(step)
        if not path.is_file():
            return {}
        found: dict[str, dict[str, Any]] = {}
        for i, row in enumerate(read_jsonl(path, tolerate_torn_tail=True), start=1):
            rid = row.get("id")
            if not isinstance(rid, str):
                raise ValueError(f"{path}: row {i} has no string field 'id'")
            found.setdefault(rid, row)
        return found

    def append(self, step: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add finished rows to the step's log (durable on return)."""
        path = self.path(step)
        drop_torn_tail(path)
        append_jsonl(path, rows)


def drop_torn_tail(path: Path, block: int = 1 << 16) -> None:
    """Cut a last line left without its newline by a killed writer, so appended rows start clean.

    Reads only the file's tail (backwards in blocks), not the whole log.
    """
    if not path.is_file():
        return
    with path.open("r+b") as f:
        end = f.seek(0, 2)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos = end
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            pos = start
        f.truncate(0)
