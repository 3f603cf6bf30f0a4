"""The whole pipeline, ``python -m rlaif.run``, on the embedded model (minutes).

smoke generation -> SL-CAI -> SFT -> preferences -> reward model -> RL-CAI (PPO) -> evaluation, in a fresh
run folder. This one run carries every end-to-end check of the stages' outputs (records, models,
labels, manifests, the evaluation summary), so CI starts one cluster and one set of engines for
them instead of one per stage pair. A second invocation finds every stage done and skips them all.

It runs the default configuration with smaller counts (fewer prompts, reward-model steps and PPO
iterations): the same code paths, in about half the time. The README's `make run` is the
default-sized run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlaif.core.cai import SLCAIMethod, SLCAIRecord
from rlaif.core.io import read_jsonl, read_manifest
from rlaif.core.preference_records import read_labels, read_pairs

REPO = Path(__file__).resolve().parents[2]
STAGES = ("smoke", "sl_cai", "sft", "preferences", "reward_model", "rl_cai", "evaluate")
SL_CAI_PROMPTS = 12
RM_STEPS = 4
PPO_ITERATIONS = 2
SMALLER = [
    f"sl_cai.num_prompts={SL_CAI_PROMPTS}",
    f"sl_cai.num_helpful={SL_CAI_PROMPTS}",
    "sl_cai.num_sensitive=6",
    "label.num_prompts=12",
    "label.num_sensitive=4",
    f"reward_model.steps={RM_STEPS}",
    f"ppo.iterations={PPO_ITERATIONS}",
    "eval.num_red_team=6",
    "eval.num_helpful=6",
    "eval.num_sensitive=6",
    "eval.num_sensitive_harmful=4",
]


def _run(run_dir: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "rlaif.run", f"run_dir={run_dir}", "cluster.include_dashboard=false"]
    args += ["logging.wandb_mode=disabled", *SMALLER]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)


def _check_sl_cai_and_sft(run_dir: Path, stdout: str) -> None:
    sl_cai = read_manifest(run_dir / "sl_cai")
    assert sl_cai is not None
    records = [SLCAIRecord.from_dict(row) for row in read_jsonl(run_dir / "sl_cai" / "records.jsonl")]
    assert len(records) == sl_cai["counts"]["records"] == SL_CAI_PROMPTS
    # The default method distils answers given in context: one per prompt, no critique rounds.
    assert all(r.method == SLCAIMethod.CONTEXT_DISTILLATION and r.principle_id and not r.rounds for r in records)
    assert any(r.final_answer.strip() for r in records)
    assert sl_cai["counts"]["helpful"] == SL_CAI_PROMPTS and sl_cai["throughput"]["chains_per_min"] > 0
    # Sensitive-but-benign requests are answered plainly too; refusals among them are counted and kept out of SFT.
    assert sl_cai["counts"]["sensitive"] == 6 and 0 <= sl_cai["counts"]["sensitive_refusals"] <= 6

    sft = read_manifest(run_dir / "sft")
    assert sft is not None and sft["counts"]["steps"] == 4 and len(sft["losses"]) == 4
    benign = list(read_jsonl(run_dir / "sl_cai" / "helpful.jsonl"))
    refused = {f"help:{row['id']}" for row in benign if row["refusal"] and not row["degenerate"]}
    assert sft["counts"]["dropped_benign_refusals"] == len(refused)
    assert not refused & {row["id"] for row in read_jsonl(run_dir / "sft" / "data.jsonl")}
    model = run_dir / "sft" / "model"
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
    # The run says where its outputs went.
    assert str(run_dir / "sl_cai" / "records.jsonl") in stdout
    assert str(model) in stdout


def _check_preferences_and_reward_model(run_dir: Path) -> None:
    prefs = read_manifest(run_dir / "preferences")
    assert prefs is not None
    pairs = read_pairs(run_dir / "preferences" / "pairs.jsonl")
    labels = read_labels(run_dir / "preferences" / "labels.jsonl")
    assert len(pairs) == len(labels) == prefs["counts"]["trl_rows"] == 12 + 4
    assert prefs["counts"]["sensitive_pairs"] == 4
    assert all(p.response_a.strip() and p.response_b.strip() for p in pairs)
    assert prefs["position_bias"]["judgements"] == len(pairs)
    assert prefs["judge_throughput"]["comparisons_per_s"] > 0
    trl = [json.loads(line) for line in (run_dir / "preferences" / "trl.jsonl").read_text().splitlines()]
    assert all(row["p_chosen"] >= 0.5 for row in trl)

    rm = read_manifest(run_dir / "reward_model")
    assert rm is not None and rm["counts"]["steps"] == RM_STEPS
    assert rm["counts"]["heldout_pairs"] > 0
    assert (run_dir / "reward_model" / "model" / "model.safetensors").is_file()
    for key in ("loss", "accuracy", "ece"):
        assert 0 <= rm["heldout_after"][key] < float("inf")


def _check_rl_and_evaluate(run_dir: Path, stdout: str) -> None:
    summary = json.loads((run_dir / "evaluate" / "summary.json").read_text())
    for pair in ("policy_vs_initial", "policy_vs_sft"):
        for prompt_set in ("red_team", "helpful"):
            assert 0.0 <= summary["win_rates"][pair][prompt_set]["win_rate"] <= 1.0
    assert "rm_score_mean" in summary["models"]["policy"]["red_team"]
    # Refusal rates by phrase, per model and held-out set, and the harmlessness-helpfulness plot.
    for model in ("initial", "sft", "policy"):
        for prompt_set in ("red_team", "helpful", "sensitive", "sensitive_harmful"):
            assert 0.0 <= summary["refusal"][model][prompt_set] <= 1.0
    assert (run_dir / "evaluate" / "harmless_helpful.png").read_bytes()[:4] == b"\x89PNG"
    assert "evaluate: refusal rates" in stdout
    rl = json.loads((run_dir / "rl_cai" / "MANIFEST.json").read_text())
    assert rl["counts"]["iterations"] == PPO_ITERATIONS and rl["summary"]["sync_bytes"] > 0
    assert (run_dir / "rl_cai" / "policy" / "model.safetensors").is_file()


def _check_quiet_console(run_dir: Path, console: str) -> None:
    """Actors' output is in <run_dir>/logs/, not on the console (logging.verbose=false, the default)."""
    forwarded = [line for line in console.splitlines() if re.match(r"^(\x1b\[\d+m)?\(\w+ pid=\d+", line)]
    assert forwarded == [], forwarded[:5]
    logs = run_dir / "logs"
    assert (logs / "driver.log").stat().st_size > 0
    for actor in ("RolloutWorker", "ConstitutionalCritic", "SFTTrainer", "RewardTrainer", "PPOTrainer"):
        assert list(logs.glob(f"{actor}-*.*")), f"no {actor} output in {logs}"
    assert f"logs: {logs.resolve()}" in console


@pytest.mark.slow
# Measured 10-17 min on the shared 2-core machine: past pytest's default 900 s timeout.
@pytest.mark.timeout(3600)
def test_pipeline_runs_every_stage_on_the_embedded_model_and_resumes(embedded_model: Path, tmp_path: Path) -> None:
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
    _check_sl_cai_and_sft(run_dir, done.stdout)
    _check_preferences_and_reward_model(run_dir)
    _check_rl_and_evaluate(run_dir, done.stdout)
    _check_quiet_console(run_dir, done.stdout + done.stderr)
    print(f"\nwhole pipeline: {wall:.0f} s")

    again = _run(run_dir)
    assert again.returncode == 0, again.stderr[-4000:]
    assert all(f"stage {s}: done already" in again.stderr + again.stdout for s in STAGES)
