"""Two Ray nodes on this machine (`cluster/local-multinode.sh`): the smoke stage's actors run on both."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlaif.core.io import read_jsonl, read_manifest

SCRIPT = Path(__file__).resolve().parents[2] / "cluster" / "local-multinode.sh"


def processes_mentioning(text: str) -> list[str]:
    """``"<pid> <command line>"`` of every process whose command line holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                words = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {words[:300]}")
    return found


@pytest.mark.slow
def test_smoke_actors_spread_over_two_local_nodes(tiny_model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [f"model.name={tiny_model}", f"run_dir={run_dir}", "logging.wandb_mode=disabled"]
    done = subprocess.run(
        ["bash", str(SCRIPT), *overrides],
        capture_output=True,
        text=True,
        timeout=900,
        # This interpreter and its environment's ray CLI, whatever PATH says.
        env={**os.environ, "PYTHON": sys.executable, "RAY": str(Path(sys.executable).with_name("ray"))},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    temp = re.search(r"ray temp dir (\S+)", done.stdout)
    assert temp, done.stdout[-2000:]
    # Both nodes were stopped, and only the script's own processes: none that use its temp dir is left.
    assert processes_mentioning(temp.group(1)) == []
    assert not Path(temp.group(1)).exists()

    manifest = read_manifest(run_dir / "smoke")
    assert manifest is not None
    nodes = {n["node_id"] for n in manifest["nodes"]}
    assert len(nodes) == 2
    # Two rollout actors, STRICT_SPREAD: one on each node.
    actor_nodes = [a["node_id"] for a in manifest["actors"]]
    assert len(actor_nodes) == 2 and set(actor_nodes) == nodes
    rows = list(read_jsonl(run_dir / "smoke" / "answers.jsonl"))
    assert len(rows) == manifest["counts"]["answers"] == 8
    assert {r["node_id"] for r in rows} == nodes
    assert len({r["id"] for r in rows}) == 8
