"""Read the records of an offline W&B run file (``run-<id>.wandb``) for tests.

The file is W&B's 7-byte header (``:W&B``, magic 0xBEE1, version) followed by a
LevelDB-style log: 32 KiB blocks of records, each ``crc32 (4) | length (2, LE) |
type (1) | data``, where type 1 is a whole record and 2/3/4 the first, middle and last
pieces of one that spans blocks. Each record's data is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def read_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", HEADER
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def run_files(run_dir: Path) -> list[Path]:
    """The offline W&B run files under a pipeline run folder."""
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
