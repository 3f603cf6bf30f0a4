"""PPO and evaluation settings: the defaults compose, and bad values fail naming the field."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlaif.config import EvalConfig, PPOConfig, RunConfig, register_configs, to_run_config

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


def compose_run(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_run_config(compose(config_name="config", overrides=overrides))


def test_default_pipeline_ends_with_rl_cai_and_evaluate() -> None:
    run = compose_run([])
    assert run.stages == ["smoke", "sl_cai", "sft", "preferences", "reward_model", "rl_cai", "evaluate"]
    assert run.ppo.placement == "disaggregated" and run.ppo.reward == "reward_model"
    # The smoke scale the 15-minute budget is planned for.
    assert (run.ppo.iterations, run.ppo.prompts_per_iteration, run.ppo.max_new_tokens) == (3, 8, 48)
    assert run.cluster.learner.num_workers >= 1 and run.cluster.reward_scorer.num_workers >= 1


def test_the_default_update_takes_several_optimizer_steps_per_batch() -> None:
    """With one step per batch every ratio is 1 and PPO's clip never acts: the defaults take >= 2."""
    from rlaif.stages.ppo_roles import reuses_value_forward

    ppo = compose_run([]).ppo
    batch = ppo.prompts_per_iteration * ppo.samples_per_prompt
    assert ppo.ppo_epochs * batch // ppo.mini_batch_size >= 2
    # So the critic runs again in the update (the one-pass shortcut holds only for one step).
    assert reuses_value_forward(compose_run([])) is False
    # A truncated response pays a penalty by default.
    assert ppo.missing_eos_penalty < 0 and ppo.tis_cap == 0


@pytest.mark.parametrize(
    ("overrides", "engine"),
    [
        ([], True),  # float32 learner and engines: their log-probs agree to ~4e-5 nats
        (["ppo.tis_cap=2"], False),  # TIS weighs the learner's π_old against the engine's: both needed
        (["deepspeed.bf16=true"], False),
        (["engine.dtype=bfloat16"], False),
        (["ppo.old_logprobs=learner"], False),
        (["ppo.old_logprobs=engine", "deepspeed.bf16=true"], True),
    ],
)
def test_old_logprobs_come_from_the_engines_only_where_both_sides_run_float32(
    overrides: list[str], engine: bool
) -> None:
    from rlaif.stages.ppo_roles import uses_engine_logprobs

    assert uses_engine_logprobs(compose_run(overrides)) is engine


@pytest.mark.parametrize(
    ("overrides", "once"),
    [
        ([], False),  # the defaults: two mini-batches of 4 per iteration
        (["ppo.mini_batch_size=8"], True),  # one epoch, one mini-batch of 8 per iteration, on CPU
        (["ppo.mini_batch_size=8", "ppo.ppo_epochs=2"], False),
        (["ppo.mini_batch_size=8", "ppo.samples_per_prompt=2"], False),
        (["ppo.mini_batch_size=8", "deepspeed.zero_stage=3"], False),
        (["ppo.mini_batch_size=8", "engine=vllm-gpu"], False),  # a whole shard's activations may not fit a GPU
        (["ppo.mini_batch_size=8", "engine=vllm-gpu", "ppo.value_forward=once"], True),
        (["ppo.value_forward=twice"], False),
    ],
)
def test_the_critic_runs_once_per_sample_where_the_update_is_one_step(overrides: list[str], once: bool) -> None:
    from rlaif.stages.ppo_roles import reuses_value_forward

    assert reuses_value_forward(compose_run(overrides)) is once


def test_async_rollout_trains_with_the_learners_log_probs_and_a_capped_behaviour_weight() -> None:
    from rlaif.stages.ppo_roles import uses_engine_logprobs

    sync, async_ = compose_run([]), compose_run(["ppo.max_staleness=1"])
    # null resolves: off in the synchronous loop, the decoupled objective's cap of 2 when asynchronous.
    assert (sync.ppo.tis_cap, async_.ppo.tis_cap) == (0.0, 2.0)
    assert uses_engine_logprobs(sync) and not uses_engine_logprobs(async_)
    assert compose_run(["ppo.max_staleness=2", "ppo.tis_cap=4"]).ppo.tis_cap == 4.0


def test_async_rollout_warns_when_rollout_and_learner_threads_exceed_the_cores() -> None:
    from rlaif.stages.ppo_roles import async_thread_warning

    # The defaults give the learner one thread and the rollout engine one: they fit 2 cores side by side.
    assert async_thread_warning(compose_run(["ppo.max_staleness=1"]), cores=2) is None
    crowded = compose_run(["ppo.max_staleness=1", "cluster.rollout.threads_per_worker=2"])
    warning = async_thread_warning(crowded, cores=2)
    assert warning is not None and "(2 + 1) exceed this machine's 2 cores" in warning
    # Taking turns (synchronous), each role may use every core.
    assert async_thread_warning(compose_run(["cluster.rollout.threads_per_worker=2"]), cores=2) is None


def test_roles_start_side_by_side_unless_two_could_share_a_gpu() -> None:
    from rlaif.stages.ppo_roles import starts_together

    # CPU roles each hold their own bundles: learner, rollout and scorer start together.
    assert starts_together(compose_run([]), reward_model=True)
    gpu = ["engine=vllm-gpu", *(f"cluster.{r}.gpus_per_worker=1" for r in ("learner", "rollout", "reward_scorer"))]
    assert starts_together(compose_run(gpu), reward_model=True)
    # Colocated: learner and engines share GPUs, so the engines start after the learner's models load.
    colocated = [*gpu, "ppo.placement=colocated", "cluster.learner.gpus_per_worker=0.5"]
    assert not starts_together(compose_run([*colocated, "cluster.rollout.gpus_per_worker=0.5"]), reward_model=False)
    # Disaggregated, but two roles given GPU fractions may be packed onto one device.
    halves = compose_run([*gpu, "cluster.rollout.gpus_per_worker=0.5", "cluster.reward_scorer.gpus_per_worker=0.5"])
    assert not starts_together(halves, reward_model=True)
    # A rule reward starts no scorers: only the rollout takes fractions, and nothing shares its GPUs.
    assert starts_together(halves, reward_model=False)
    one_half = compose_run([*gpu, "cluster.reward_scorer.gpus_per_worker=0.5"])
    assert starts_together(one_half, reward_model=True)


def test_critic_free_estimators_start_no_critic() -> None:
    from rlaif.stages.ppo_roles import ModelPaths, learner_args, reuses_value_forward

    paths = ModelPaths(Path("/policy"), Path("/rm"))
    gae = learner_args(compose_run([]), paths, 1)
    assert gae["critic_path"] == "/rm" and gae["critic_ds_config"] is not None
    for estimator in ("grpo", "rloo", "reinforce_pp"):
        run = compose_run([f"ppo.advantage={estimator}", "ppo.samples_per_prompt=2", "ppo.mini_batch_size=16"])
        args = learner_args(run, paths, 1)
        assert args["critic_path"] is None and args["critic_ds_config"] is None
        # One mini-batch of one epoch would let gae reuse its critic pass; without a critic there is none.
        assert reuses_value_forward(run) is False


def test_the_dry_run_charges_the_learner_for_a_critic_only_under_gae() -> None:
    from rlaif.plan import build_plan, render

    def learner_gib(overrides: list[str]) -> tuple[float, str]:
        run = compose_run(["+experiment=large", *overrides])
        plan = build_plan(run)
        stage = next(s for s in plan.stages if s.stage == "rl_cai")
        return next(a.memory_gib for a in stage.assignments if a.role == "learner"), render(run, plan)

    gae_gib, gae_text = learner_gib([])
    grpo_gib, grpo_text = learner_gib(["ppo.advantage=grpo", "ppo.samples_per_prompt=4"])
    assert grpo_gib < gae_gib
    gae_rows = [line for line in gae_text.splitlines() if line.strip().startswith("learner")]
    grpo_rows = [line for line in grpo_text.splitlines() if line.strip().startswith("learner")]
    assert gae_rows and all("actor + critic + reference" in line for line in gae_rows)
    assert grpo_rows and all("actor + reference (ppo.advantage=grpo: no critic)" in line for line in grpo_rows)


def test_one_critic_pass_is_refused_where_the_update_would_see_other_values() -> None:
    from rlaif.stages.ppo_roles import reuses_value_forward

    with pytest.raises(ValueError, match="ppo.value_forward=once needs ppo.ppo_epochs=1"):
        reuses_value_forward(compose_run(["ppo.value_forward=once", "ppo.ppo_epochs=2"]))
    with pytest.raises(ValueError, match="ppo.value_forward=once needs"):
        reuses_value_forward(compose_run(["ppo.value_forward=once"]))  # the default two mini-batches


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kl_estimator": "k4"}, "ppo.kl_estimator"),
        ({"old_logprobs": "rollout"}, "ppo.old_logprobs"),
        ({"value_forward": "never"}, "ppo.value_forward"),
        ({"placement": "shared"}, "ppo.placement"),
        ({"mini_batch_size": 6, "micro_batch_size": 4}, "ppo.mini_batch_size"),
        ({"prompts_per_iteration": 6}, "mini_batch_size"),
        ({"temperature": 0.0}, "ppo.temperature"),
        ({"lam": 1.5}, "lam"),
        ({"missing_eos_penalty": 0.5}, "ppo.missing_eos_penalty"),
        ({"tis_cap": 0.5}, "ppo.tis_cap"),
        ({"tis_cap": -1.0}, "ppo.tis_cap"),
        ({"tis_cap": 2.0, "old_logprobs": "engine"}, r"ppo.tis_cap > 0 .* ppo.old_logprobs=engine"),
        ({"advantage": "ppo"}, "ppo.advantage"),
        ({"advantage": "grpo"}, r"ppo.advantage=grpo .* ppo.samples_per_prompt >= 2, got 1"),
        ({"advantage": "rloo"}, r"ppo.advantage=rloo .* ppo.samples_per_prompt >= 2"),
        ({"advantage": "reinforce_pp", "value_forward": "once"}, r"ppo.value_forward=once .* has no critic"),
        ({"kl_in": "advantage"}, "ppo.kl_in"),
        ({"max_staleness": -1}, "ppo.max_staleness"),
        ({"max_staleness": 1, "tis_cap": 0.0}, r"ppo.max_staleness=1 .* decoupled objective"),
        ({"max_staleness": 1, "old_logprobs": "engine"}, r"ppo.tis_cap > 0 .* ppo.old_logprobs=engine"),
        ({"max_staleness": 1, "placement": "colocated"}, r"ppo.max_staleness >= 1 .*ppo.placement=colocated"),
        ({"loss_agg": "sum"}, "ppo.loss_agg"),
    ],
)
def test_bad_ppo_values_fail_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PPOConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_eval_values_fail_naming_the_field() -> None:
    with pytest.raises(ValueError, match="eval.max_new_tokens"):
        EvalConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="eval.temperature"):
        EvalConfig(temperature=-1.0)
    for field in ("num_red_team", "num_helpful", "num_sensitive", "num_sensitive_harmful"):
        with pytest.raises(ValueError, match=f"eval.{field} must be >= 0"):
            EvalConfig(**{field: -1})  # type: ignore[arg-type]
    assert EvalConfig(num_sensitive=0).num_sensitive == 0  # 0: every held-out prompt
