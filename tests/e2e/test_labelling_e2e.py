"""RL-CAI labelling and reward-model training end to end on the embedded model, through `python -m rlaif.run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlaif.core.io import read_manifest
from rlaif.core.preference_records import read_labels, read_pairs


@pytest.mark.slow
def test_labelling_and_reward_model_stages_run_and_resume(embedded_model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "rlaif.run",
        "stages=[preferences,reward_model]",
        f"run_dir={run_dir}",
        "cluster.include_dashboard=false",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]

    prefs = read_manifest(run_dir / "preferences")
    assert prefs is not None
    pairs = read_pairs(run_dir / "preferences" / "pairs.jsonl")
    labels = read_labels(run_dir / "preferences" / "labels.jsonl")
    assert len(pairs) == len(labels) == prefs["counts"]["trl_rows"] > 0
    assert all(p.response_a.strip() and p.response_b.strip() for p in pairs)
    assert prefs["position_bias"]["judgements"] == len(pairs)
    assert prefs["judge_throughput"]["comparisons_per_s"] > 0
    trl = [json.loads(line) for line in (run_dir / "preferences" / "trl.jsonl").read_text().splitlines()]
    assert all(row["p_chosen"] >= 0.5 for row in trl)

    rm = read_manifest(run_dir / "reward_model")
    assert rm is not None and rm["counts"]["steps"] == 4
    assert (run_dir / "reward_model" / "model" / "model.safetensors").is_file()
    for key in ("loss", "accuracy", "ece"):
        assert 0 <= rm["heldout_after"][key] < float("inf")

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "stage preferences: done already" in log and "stage reward_model: done already" in log
