"""The whole default pipeline, ``python -m rlaif.run``, on the embedded model (minutes).

smoke generation -> SL-CAI -> SFT -> preferences -> reward model -> RL-CAI (PPO) -> evaluation, in a fresh
run folder; every stage must leave its manifest and the evaluation its summary. A second
invocation finds every stage done and skips them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ("smoke", "sl_cai", "sft", "preferences", "reward_model", "rl_cai", "evaluate")


def _run(run_dir: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "rlaif.run", f"run_dir={run_dir}", "cluster.include_dashboard=false"]
    args.append("logging.wandb_mode=disabled")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)


@pytest.mark.slow
# Measured 15-25 min on the shared 2-core machine: past pytest's default 900 s timeout.
@pytest.mark.timeout(3600)
def test_default_pipeline_runs_every_stage_on_the_embedded_model(embedded_model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    started = time.perf_counter()
    done = _run(run_dir)
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-4000:]
    # The smoke stage prints the rollout actors' answers and their throughput.
    assert "answers from 1 rollout actor(s)" in done.stdout and "tokens/s" in done.stdout
    for stage in STAGES:
        manifest = run_dir / stage / "MANIFEST.json"
        assert manifest.is_file(), f"stage {stage} left no manifest"
    summary = json.loads((run_dir / "evaluate" / "summary.json").read_text())
    for pair in ("policy_vs_initial", "policy_vs_sft"):
        for prompt_set in ("red_team", "helpful"):
            assert 0.0 <= summary["win_rates"][pair][prompt_set]["win_rate"] <= 1.0
    assert "rm_score_mean" in summary["models"]["policy"]["red_team"]
    # Refusal rates by phrase, per model and held-out set, and the harmlessness-helpfulness plot.
    for model in ("initial", "sft", "policy"):
        for prompt_set in ("red_team", "helpful"):
            assert 0.0 <= summary["refusal"][model][prompt_set] <= 1.0
    assert (run_dir / "evaluate" / "harmless_helpful.png").read_bytes()[:4] == b"\x89PNG"
    assert "evaluate: refusal rates" in done.stdout
    rl = json.loads((run_dir / "rl_cai" / "MANIFEST.json").read_text())
    assert rl["counts"]["iterations"] >= 1 and rl["summary"]["sync_bytes"] > 0
    assert (run_dir / "rl_cai" / "policy" / "model.safetensors").is_file()
    print(f"\nwhole pipeline: {wall:.0f} s")

    again = _run(run_dir)
    assert again.returncode == 0, again.stderr[-4000:]
    assert all(f"stage {s}: done already" in again.stderr + again.stdout for s in STAGES)
