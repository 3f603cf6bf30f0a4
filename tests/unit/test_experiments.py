"""The experiments compose, and their dry-run plans fit the clusters they describe.

`large` is planned on 4 nodes x 8 GPUs of 80 GiB; `small` on one node of 8. Every GPU
goes to at most one role per stage (a declared colocation excepted), every rank's
memory fits its GPU, and the dry run starts nothing.
"""

import dataclasses
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlaif.config import RunConfig, register_configs, to_run_config
from rlaif.core.placement import PlacementError
from rlaif.plan import STAGE_ROLES, build_plan, dry_run

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# The experiments that describe GPU clusters; `laptop` runs on this machine's CPUs.
GPU_EXPERIMENTS = [name for name in EXPERIMENTS if name != "laptop"]
register_configs()


def compose_run(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_run_config(compose(config_name="config", overrides=overrides))


def test_the_named_experiments_exist() -> None:
    assert {"small", "large", "large-colocated", "laptop"} <= set(EXPERIMENTS)


def test_the_laptop_experiment_uses_train_splits_and_the_in_context_signal() -> None:
    run = compose_run(["+experiment=laptop"])
    assert run.engine.device == "cpu" and run.engine.dtype == "float32" and not run.deepspeed.bf16
    assert run.sl_cai.method == "context_distillation"
    assert (run.label.pairs, run.label.source) == ("contrastive", "construction")
    # Every stage reads the prompts through sl_cai's held-out split; evaluate reads only the held-out part.
    assert run.label.prompts == run.sl_cai.red_team and run.sl_cai.heldout_fraction > 0
    samples = run.ppo.prompts_per_iteration * run.ppo.samples_per_prompt
    assert samples // run.ppo.mini_batch_size * run.ppo.ppo_epochs >= 2
    # The benign direction: sensitive requests in the SFT mix, in the preference pairs and in PPO, and
    # every held-out one (and every harmful counterpart) evaluated.
    from rlaif.stages.sl_cai import sensitive_prompts

    every = len(sensitive_prompts(dataclasses.replace(run.sl_cai, num_sensitive=10_000), run.seed))
    assert run.sl_cai.num_sensitive == run.label.num_sensitive == every and run.ppo.sensitive_fraction > 0
    assert run.eval.num_sensitive == 0 and run.eval.num_sensitive_harmful == 0


@pytest.mark.parametrize("name", GPU_EXPERIMENTS)
def test_experiment_plan_gives_each_gpu_once_and_fits_memory(name: str) -> None:
    run = compose_run([f"+experiment={name}"])
    assert run.engine.device == "cuda" and run.engine.dtype == "bfloat16" and run.deepspeed.zero_stage == 3
    plan = build_plan(run)
    assert [s.stage for s in plan.stages] == run.stages
    gpus = run.plan.gpus_per_node
    for stage in plan.stages:
        assert {a.role for a in stage.assignments} == set(STAGE_ROLES[stage.stage])
        colocated = {d.role for d in stage.demands if d.colocate_with}
        owners = Counter((a.node, g) for a in stage.assignments if a.role not in colocated for g in a.gpus)
        assert owners and max(owners.values()) == 1, f"{name}/{stage.stage}: a GPU is given twice"
        assert all(node in {n.name for n in plan.nodes} and 0 <= g < gpus for node, g in owners)
        for a in stage.assignments:
            assert a.gpus, f"{name}/{stage.stage}: {a.role} has no GPU"
            assert a.memory_gib / len(a.gpus) <= run.plan.gpu_memory_gib
            # A colocated rank sits on GPUs its host role holds.
            if a.role in colocated:
                assert all(owners[(a.node, g)] == 1 for g in a.gpus)
    assert plan.sync is not None and len(plan.sync.targets) == run.cluster.rollout.num_workers


def test_large_uses_the_whole_cluster_with_tensor_parallel_engines() -> None:
    run = compose_run(["+experiment=large"])
    assert (run.plan.nodes, run.plan.gpus_per_node, run.plan.gpu_memory_gib) == (4, 8, 80.0)
    assert run.engine.tensor_parallel_size == 2 and run.sl_cai.red_team == "Anthropic/hh-rlhf"
    plan = build_plan(run)
    by_stage = {s.stage: s for s in plan.stages}
    # 16 critic engines x TP 2 and 32 SFT ranks each fill 32 GPUs.
    assert sum(len(a.gpus) for a in by_stage["sl_cai"].assignments) == 32
    assert all(len(a.gpus) == 2 for a in by_stage["sl_cai"].assignments)
    assert len({a.node for a in by_stage["sft"].assignments}) == 4
    assert plan.sync is not None and plan.sync.backend == "nccl" and plan.sync.source.role == "learner"
    # 8.03e9 bf16 parameters = 16.06e9 bytes, in ceil(16.06e9 / 256 MiB) = 60 buckets.
    assert plan.sync.bytes_per_sync == 16_060_000_000 and plan.sync.buckets == 60


@pytest.mark.parametrize("name", ["small", "large", "large-colocated"])
def test_capable_models_run_the_papers_critique_revision_chains(name: str) -> None:
    assert compose_run([f"+experiment={name}"]).sl_cai.method == "critique_revision"


def test_colocated_rollout_shares_the_learner_gpus() -> None:
    plan = build_plan(compose_run(["+experiment=large-colocated"]))
    rl = next(s for s in plan.stages if s.stage == "rl_cai")
    learner = {(a.node, a.gpus) for a in rl.assignments if a.role == "learner"}
    rollout = {(a.node, a.gpus) for a in rl.assignments if a.role == "rollout"}
    assert rollout == learner and len(rollout) == 16
    assert plan.sync is not None and plan.sync.backend == "gloo"


@pytest.mark.parametrize(
    ("overrides", "culprit"),
    [
        (["cluster.critic.num_workers=17"], "'critic'"),  # 17 x 2 GPUs > 32
        (["plan.gpu_memory_gib=24"], "GiB"),  # an 8B learner rank does not fit 24 GiB
        (["cluster.judge.gpus_per_worker=1"], "tensor_parallel_size"),
        (["ppo.placement=colocated"], "colocated"),  # whole-GPU learner and rollout cannot share
    ],
)
def test_a_plan_that_does_not_fit_names_the_culprit(overrides: list[str], culprit: str) -> None:
    with pytest.raises(PlacementError, match=culprit):
        build_plan(compose_run(["+experiment=large", *overrides]))


def test_colocation_checks_the_awake_engine_beside_the_learner() -> None:
    with pytest.raises(PlacementError, match="gpu_memory_utilization"):
        build_plan(compose_run(["+experiment=large-colocated", "engine.gpu_memory_utilization=0.8"]))


def test_default_cpu_config_plans_without_gpus() -> None:
    text = dry_run(compose_run([]))
    assert "any (CPU)" in text and "weight sync (gloo)" in text


def _rlaif_run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    # Runs rlaif.run as `python -m` would, then reports which heavy packages got imported:
    # nothing can start Ray or load a model without importing them.
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('IMPORTED', sorted(m for m in ('ray', 'torch', 'vllm', 'deepspeed', "
        "'transformers', 'wandb') if m in sys.modules)))\n"
        f"sys.argv = ['rlaif.run', *{args!r}]\n"
        "runpy.run_module('rlaif.run', run_name='__main__')\n"
    )
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path: Path) -> None:
    out = _rlaif_run(
        ["+experiment=large", "dry_run=true", f"hydra.run.dir={tmp_path}/h", f"run_dir={tmp_path}/r"], tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "stage rl_cai: 32/32 GPUs" in out.stdout and "node-3 GPU 6,7" in out.stdout
    assert "weight sync (nccl): learner rank 0 at node-" in out.stdout and "60 bucket(s) of 256 MB" in out.stdout
    assert out.stdout.strip().endswith("IMPORTED []")
    assert not (tmp_path / "r").exists()


def test_cfg_job_resolves_the_large_experiment(tmp_path: Path) -> None:
    out = _rlaif_run(["+experiment=large", "--cfg", "job"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "name: meta-llama/Llama-3.1-8B-Instruct" in out.stdout and "tensor_parallel_size: 2" in out.stdout


def test_a_plan_that_does_not_fit_exits_with_one_line(tmp_path: Path) -> None:
    out = _rlaif_run(["+experiment=large", "dry_run=true", "plan.nodes=2", f"hydra.run.dir={tmp_path}/h"], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == ["error: role 'critic': no node has 2 free GPU(s) left for rank 8"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_field_carries_a_comment(name: str) -> None:
    previous = ""
    for number, line in enumerate((CONF / "experiment" / f"{name}.yaml").read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        if re.match(r"^\s*[A-Za-z_][\w.-]*:", line):
            assert previous.startswith("#"), f"{name}.yaml:{number}: {text!r} has no comment above it"
        previous = text
