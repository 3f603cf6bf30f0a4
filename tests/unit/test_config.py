"""Every config composes, typed values are checked, and a mistyped key fails."""

from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from rlaif.config import RoleResources, RunConfig, register_configs, to_run_config

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


def compose_run(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_run_config(compose(config_name="config", overrides=overrides))


def test_default_config_composes_to_typed_objects() -> None:
    run = compose_run([])
    assert run.model.name == "smollm2-135m-instruct"
    assert run.engine.backend == "vllm" and run.engine.dtype == "float32"
    assert run.cluster.address is None and run.cluster.dashboard_host == "127.0.0.1"
    assert run.run_dir == "runs/smoke"


@pytest.mark.parametrize("group", ["engine", "cluster", "deepspeed", "model", "sl_cai", "sft", "label", "reward_model"])
def test_every_file_of_every_group_composes(group: str) -> None:
    for path in sorted((CONF / group).glob("*.yaml")):
        run = compose_run([f"{group}={path.stem}"])
        assert isinstance(run, RunConfig)


def test_unknown_key_fails() -> None:
    with pytest.raises((ConfigCompositionException, ValidationError), match="bogus"):
        compose_run(["engine.bogus=1"])


def test_mistyped_value_fails() -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_run(["engine.max_model_len=lots"])


def test_bad_enum_value_is_rejected_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="engine.backend"):
        compose_run(["engine.backend=tensorrt"])


def test_sl_cai_and_sft_values_are_checked_with_the_field_named() -> None:
    run = compose_run([])
    assert run.stages[:3] == ["smoke", "sl_cai", "sft"] and run.sl_cai.rounds == 2 and run.sft.steps == 4
    with pytest.raises(ValueError, match="sl_cai.rounds"):
        compose_run(["sl_cai.rounds=0"])
    with pytest.raises(ValueError, match="sft.lr"):
        compose_run(["sft.lr=0"])


def test_sl_cai_method_defaults_to_context_distillation_and_names_the_choices() -> None:
    from rlaif.core.cai import SLCAIMethod

    # The embedded model cannot critique, so the default distils its in-context answers instead.
    assert compose_run([]).sl_cai.method == SLCAIMethod.CONTEXT_DISTILLATION
    assert compose_run(["sl_cai.method=critique_revision"]).sl_cai.method == SLCAIMethod.CRITIQUE_REVISION
    with pytest.raises(
        ValueError, match=r"sl_cai.method must be one of \['critique_revision', 'context_distillation'\]"
    ):
        compose_run(["sl_cai.method=self_instruct"])


def test_no_training_stage_reads_the_held_out_prompts() -> None:
    from rlaif.core.prompts import load_prompts, split_train_heldout
    from rlaif.stages.ppo_prompts import TrainPrompts
    from rlaif.stages.preferences import select_sensitive_prompts
    from rlaif.stages.sl_cai import helpful_prompts, red_team_prompts, sensitive_prompts

    big = 10_000
    run = compose_run(
        ["sl_cai.num_prompts=0", "sl_cai.num_helpful=0", f"sl_cai.num_sensitive={big}", "sl_cai.heldout_fraction=0.2"]
        + [f"label.num_sensitive={big}", "ppo.sensitive_fraction=0.5", "ppo.helpful_fraction=0.25"]
    )
    s = run.sl_cai
    ppo = TrainPrompts.load(run)
    sets = [
        (s.red_team, red_team_prompts(s, run.seed)),
        (s.helpful, helpful_prompts(s, run.seed)),
        (s.sensitive, sensitive_prompts(s, run.seed)),
        (s.sensitive, select_sensitive_prompts(run)),
        (s.red_team, ppo.red_team),
        (s.helpful, ppo.helpful),
        (s.sensitive, ppo.sensitive),
    ]
    for source, trained in sets:
        train, heldout = split_train_heldout(load_prompts(source), s.heldout_fraction, run.seed)
        # The evaluate stage's held-out split never reaches a training stage, and each gets the rest.
        assert heldout and not {r.id for r in heldout} & {r.id for r in trained}
        assert {r.id for r in trained} == {r.id for r in train}


def test_ppo_batches_draw_their_shares_of_helpful_and_sensitive_prompts() -> None:
    from rlaif.stages.ppo_prompts import TrainPrompts

    run = compose_run(["ppo.prompts_per_iteration=8", "ppo.helpful_fraction=0.25", "ppo.sensitive_fraction=0.25"])
    prompts = TrainPrompts.load(run)
    assert (prompts.n_red_team, prompts.n_helpful, prompts.n_sensitive) == (4, 2, 2)
    for iteration in range(3):
        batch = prompts.batch(iteration, run.seed)
        kinds = Counter(p.id.split("-")[0] for p in batch)
        assert kinds == {"rt": 4, "hp": 2, "sb": 2}, kinds
    with pytest.raises(ValueError, match="sum to at most 1"):
        compose_run(["ppo.helpful_fraction=0.6", "ppo.sensitive_fraction=0.6"])


def test_an_engine_actor_runs_its_roles_threads_else_its_cpus() -> None:
    """`engine_env` takes a role's resources whole: `cluster.<role>.threads_per_worker` wins over its CPUs."""
    from rlaif.actors.pool import engine_env

    def threads(cpus: float, threads: int | None = None) -> str:
        return engine_env(RoleResources(cpus_per_worker=cpus, threads_per_worker=threads))["OMP_NUM_THREADS"]

    assert (threads(2.0), threads(0.5), threads(0.5, 2), threads(2.0, 1)) == ("2", "1", "2", "1")
    run = compose_run(["cluster.judge.cpus_per_worker=0.5", "cluster.judge.threads_per_worker=2"])
    assert engine_env(run.cluster.judge)["OMP_NUM_THREADS"] == "2"
