"""Stage outputs on disk (docs/design.md §4): atomic JSONL files and the MANIFEST that marks a stage done.

Each stage writes under ``<run_dir>/<stage>/``. Files are written to a temporary name
and renamed, so a killed run never leaves half a file under the real name; the
manifest is written last, and a stage whose manifest exists is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

MANIFEST = "MANIFEST.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh sibling opened with O_EXCL and mode 0666, so the process umask applies as it would to
    # a plain open() (mkstemp would make it 0600, and reading the umask means setting it).
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Atomically write `rows` as JSON lines; return how many."""
    lines = [json.dumps(dict(r), ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def append_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows to a work-in-progress shard (flushed and fsynced; torn last lines are skipped on read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(dict(r), ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path, tolerate_torn_tail: bool = False) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; with `tolerate_torn_tail`, a cut-off last line is ignored."""
    with path.open(encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if tolerate_torn_tail and i == len(lines) - 1:
                return
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
        yield row


def config_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of a config mapping (sorted JSON)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_manifest(stage_dir: Path, counts: Mapping[str, int], config: Mapping[str, Any], **extra: Any) -> Path:
    """Mark a stage done: counts, config hash, seeds and code version, written last and atomically."""
    from rlaif import __version__

    manifest = {
        "stage": stage_dir.name,
        "counts": dict(counts),
        "config_hash": config_hash(config),
        "config": dict(config),
        "code_version": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    path = stage_dir / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's manifest, or None if the stage has not finished."""
    path = stage_dir / MANIFEST
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
