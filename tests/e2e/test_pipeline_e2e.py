"""The whole pipeline, ``python -m rlaif.run``, on the embedded model (minutes).

smoke generation -> SL-CAI -> SFT -> preferences -> reward model -> RL-CAI (PPO) -> evaluation, in a fresh
run folder. This one run carries every end-to-end check of the stages' outputs (records, models,
labels, manifests, the evaluation summary), so CI starts one cluster and one set of engines for
them instead of one per stage pair. A second invocation finds every stage done and skips them all.

It runs the default configuration with smaller counts (fewer prompts, tokens, SFT and reward-model
steps and PPO iterations): the same code paths, in a fraction of the time. The README's `make run`
is the default-sized run. `test_the_smaller_counts_leave_every_split_non_empty` checks, without a
model, that these counts still give each stage the prompts it needs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from rlaif.core.cai import SLCAIMethod, SLCAIRecord, principle_for
from rlaif.core.constitution import load_constitution
from rlaif.core.io import read_jsonl, read_manifest
from rlaif.core.preference_records import read_labels, read_pairs
from rlaif.core.refusal import is_refusal

if TYPE_CHECKING:
    from rlaif.config import RunConfig

REPO = Path(__file__).resolve().parents[2]
STAGES = ("smoke", "sl_cai", "sft", "preferences", "reward_model", "rl_cai", "evaluate")
# The counts, all in one place; the checks below are written in them.
SMOKE_PROMPTS = 2
# Red-team prompts distilled in context, and as many helpful ones answered plainly.
SL_CAI_PROMPTS = 4
SL_CAI_SENSITIVE = 2
SFT_STEPS = 2
# Red-team and sensitive prompts the policy answers twice and the judge labels: one pair each.
LABEL_PROMPTS = 4
LABEL_SENSITIVE = 2
RM_STEPS = 2
PPO_ITERATIONS = 2
# Prompts of each held-out set the three models answer.
EVAL_PROMPTS = 2
SMALLER = [
    f"smoke.num_prompts={SMOKE_PROMPTS}",
    "smoke.max_new_tokens=16",
    f"sl_cai.num_prompts={SL_CAI_PROMPTS}",
    f"sl_cai.num_helpful={SL_CAI_PROMPTS}",
    f"sl_cai.num_sensitive={SL_CAI_SENSITIVE}",
    "sl_cai.max_new_tokens=48",
    f"sft.steps={SFT_STEPS}",
    # No checkpoint is written at the last step: one after step 1 keeps the checkpoint path in the run.
    "sft.checkpoint_every=1",
    "sft.eval_examples=4",
    f"label.num_prompts={LABEL_PROMPTS}",
    f"label.num_sensitive={LABEL_SENSITIVE}",
    "label.max_new_tokens=32",
    f"reward_model.steps={RM_STEPS}",
    f"ppo.iterations={PPO_ITERATIONS}",
    # 4 samples in mini-batches of 2: two optimizer steps per iteration, so PPO's ratio and clip act
    # on the second, as at the default 8 and 4.
    "ppo.prompts_per_iteration=4",
    "ppo.mini_batch_size=2",
    "ppo.micro_batch_size=2",
    "ppo.max_new_tokens=16",
    f"eval.num_red_team={EVAL_PROMPTS}",
    f"eval.num_helpful={EVAL_PROMPTS}",
    f"eval.num_sensitive={EVAL_PROMPTS}",
    f"eval.num_sensitive_harmful={EVAL_PROMPTS}",
    "eval.max_new_tokens=16",
]


def _smaller_run() -> RunConfig:
    """The configuration the run below composes (the defaults and `SMALLER`), composed here without a model."""
    from hydra import compose, initialize_config_dir

    from rlaif.config import register_configs, to_run_config

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return to_run_config(compose(config_name="config", overrides=SMALLER))


def _run(run_dir: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "rlaif.run", f"run_dir={run_dir}", "cluster.include_dashboard=false"]
    args += ["logging.wandb_mode=disabled", *SMALLER]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)


def _check_sl_cai_and_sft(run_dir: Path, stdout: str) -> None:
    from rlaif.stages.sl_cai import constitution_path, red_team_prompts, sensitive_prompts

    run = _smaller_run()
    sl_cai = read_manifest(run_dir / "sl_cai")
    assert sl_cai is not None and sl_cai["config"]["seed"] == run.seed
    assert sl_cai["config"]["sl_cai"]["method"] == "context_distillation"
    # The default method distils answers given in context: one record per prompt, in order, made under its
    # seeded principle; no critique rounds, so the first answer is the final one.
    prompts = red_team_prompts(run.sl_cai, run.seed)
    constitution = load_constitution(constitution_path(run))
    records = [SLCAIRecord.from_dict(row) for row in read_jsonl(run_dir / "sl_cai" / "records.jsonl")]
    assert [r.id for r in records] == [p.id for p in prompts] and len(records) == SL_CAI_PROMPTS
    assert all(r.method == SLCAIMethod.CONTEXT_DISTILLATION and r.rounds == () for r in records)
    assert [r.principle_id for r in records] == [principle_for(constitution, run.seed, r.id, 0).id for r in records]
    assert all(r.first_answer == r.final_answer for r in records)
    assert any(r.final_answer.strip() for r in records)
    # One generation per prompt, then the plain helpful and sensitive-request answers; degenerate answers
    # are counted by reason, and refusals of benign requests per set.
    generated = {"in_context": SL_CAI_PROMPTS, "helpful": SL_CAI_PROMPTS, "sensitive": SL_CAI_SENSITIVE}
    assert sl_cai["generated_this_run"] == generated
    counts = sl_cai["counts"]
    assert counts["records"] == SL_CAI_PROMPTS and "revisions" not in counts
    assert counts["degenerate_records"] == sum(r.degenerate for r in records)
    assert sum(sl_cai["degenerate_reasons"].values()) == counts["degenerate_records"]
    assert counts["helpful"] == SL_CAI_PROMPTS and sl_cai["throughput"]["chains_per_min"] > 0
    benign = list(read_jsonl(run_dir / "sl_cai" / "helpful.jsonl"))
    assert [row["kind"] for row in benign] == ["helpful"] * SL_CAI_PROMPTS + ["sensitive"] * SL_CAI_SENSITIVE
    sensitive_ids = {p.id for p in sensitive_prompts(run.sl_cai, run.seed)}
    assert {row["id"] for row in benign if row["kind"] == "sensitive"} == sensitive_ids
    assert all(row["refusal"] == is_refusal(row["answer"]) for row in benign)
    # Sensitive-but-benign requests are answered plainly too; refusals among them are counted and kept out of SFT.
    assert counts["sensitive"] == SL_CAI_SENSITIVE
    assert counts["sensitive_refusals"] == sum(row["refusal"] for row in benign[SL_CAI_PROMPTS:])

    sft = read_manifest(run_dir / "sft")
    assert sft is not None and sft["counts"]["steps"] == SFT_STEPS and len(sft["losses"]) == SFT_STEPS
    refused = {f"help:{row['id']}" for row in benign if row["refusal"] and not row["degenerate"]}
    assert sft["counts"]["dropped_benign_refusals"] == len(refused)
    data = list(read_jsonl(run_dir / "sft" / "data.jsonl"))
    assert not refused & {row["id"] for row in data}
    # SFT learns each usable distilled answer for the bare prompt: no guideline, no exemplars.
    by_id = {f"rev:{r.id}": r for r in records}
    distilled = [row for row in data if row["id"].startswith("rev:")]
    assert {row["id"] for row in distilled} == {i for i, r in by_id.items() if not r.degenerate}
    for row in distilled:
        assert (row["prompt"], row["response"]) == (by_id[row["id"]].prompt, by_id[row["id"]].final_answer)
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
    assert len(pairs) == len(labels) == prefs["counts"]["trl_rows"] == LABEL_PROMPTS + LABEL_SENSITIVE
    assert prefs["counts"]["sensitive_pairs"] == LABEL_SENSITIVE
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


def test_the_smaller_counts_leave_every_split_non_empty() -> None:
    """No model: the prompts each stage would pick at these counts, from the stages' own functions.

    The reward model's held-out split is a hash of the labelled prompt ids, so with few labelled
    prompts it can be empty, and the stage then stops; this fails first, in seconds.
    """
    from rlaif.stages.evaluate import heldout_prompts, heldout_sets
    from rlaif.stages.ppo_prompts import TrainPrompts
    from rlaif.stages.preferences import select_prompts, select_sensitive_prompts
    from rlaif.stages.reward_model import heldout_prompt_ids
    from rlaif.stages.sl_cai import helpful_prompts, red_team_prompts, sensitive_prompts

    run = _smaller_run()
    s = run.sl_cai
    assert len(red_team_prompts(s, run.seed)) == len(helpful_prompts(s, run.seed)) == SL_CAI_PROMPTS
    assert len(sensitive_prompts(s, run.seed)) == SL_CAI_SENSITIVE
    assert 0 < run.sft.checkpoint_every < run.sft.steps == SFT_STEPS

    labelled = [*select_prompts(run), *select_sensitive_prompts(run)]
    assert len(labelled) == LABEL_PROMPTS + LABEL_SENSITIVE
    held = heldout_prompt_ids(labelled, run.reward_model.heldout_fraction, run.seed)
    assert 0 < len(held) < len(labelled), held

    ppo = run.ppo
    prompts = TrainPrompts.load(run)
    assert all(len(prompts.batch(k, run.seed)) == ppo.prompts_per_iteration for k in range(PPO_ITERATIONS))
    assert ppo.prompts_per_iteration * ppo.samples_per_prompt // ppo.mini_batch_size == 2

    by_set = Counter(name for name, _ in heldout_prompts(run))
    assert by_set == {h.name: EVAL_PROMPTS for h in heldout_sets(run)}


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
