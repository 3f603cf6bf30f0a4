"""The PPO learner with real DeepSpeed ranks and real vLLM rollout engines, on the tiny model.

1. Weight sync with the real `PPOTrainer` as sender: after a PPO update and a sync,
   every engine's greedy output and option log-probs equal the learner's own model's
   (one fp32 rank with two engines: asked for ZeRO-2, such a rank runs as stage 0 with
   DeepSpeedCPUAdam, `rlaif.trainers.ds_config`; ZeRO-3 with two ranks, whose shards are
   gathered per bucket, and one engine).
2. A short RL-CAI run with a rule reward (how often one token appears): the mean reward
   clearly rises, each batch takes several optimizer steps, truncated responses pay the
   missing-EOS penalty, and the engine-vs-learner log-prob mismatch is logged (and small).

Expensive things are built once and shared: the one-rank learner by the tests of
`TestOneRankLearner` (each starts from its untrained checkpoint), the crafted policy by every
RL-CAI run of the file, and the synchronous run by the two tests that read it. tests/conftest.py
puts the tests that share one on a single pytest-xdist worker.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
from hydra import compose, initialize_config_dir

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.policy_sync import PolicySync
from rlaif.actors.pool import ActorPool, engine_env
from rlaif.actors.rollout import RolloutWorker
from rlaif.actors.trainer_group import TrainerGroup
from rlaif.config import RoleResources, RunConfig, register_configs, to_run_config
from rlaif.core.experience import collate_rollouts, concat_outputs, make_experience, split_batch
from rlaif.core.io import read_jsonl, read_manifest
from rlaif.core.prompts import load_prompts
from rlaif.core.sink import NullSink
from rlaif.engines.base import EngineSpec, Message, OptionRequest, SamplingParams
from rlaif.engines.hf_engine import TransformersEngine
from rlaif.stages.pipeline import StageContext
from rlaif.stages.ppo_roles import role_specs, sync_backend
from rlaif.trainers import distributed as D
from rlaif.trainers.ds_config import build_ds_config
from rlaif.trainers.ppo import PPOTrainer

# Ray workers cannot import test modules: ship this module's classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

CONF = Path(__file__).resolve().parents[2] / "conf"
PROMPTS = [[Message("user", "Name a colour.")], [Message("user", "Tell me a story.")], "Once upon a time"]
OPTIONS = [OptionRequest("Pick one: (", ("A", "B")), OptionRequest("The sky is", (" blue", " green", " red"))]


def _outputs(engine: object) -> tuple[list[tuple[int, ...]], list[tuple[float, ...]]]:
    greedy = engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=12))  # type: ignore[attr-defined]
    scores = engine.score_options(OPTIONS)  # type: ignore[attr-defined]
    return [g.completions[0].token_ids for g in greedy], [s.logprobs for s in scores]


class InspectedPPOTrainer(PPOTrainer):
    """The real learner, plus a look at its own weights through a transformers engine (all ranks call)."""

    def learner_outputs(self, model_path: str) -> tuple[list, list] | None:
        state = D.full_state_dict(self.actor.module, self.zero_stage, self.rank)
        if state is None:
            return None
        hf = TransformersEngine(EngineSpec(model_path=model_path, backend="transformers", max_model_len=256))
        hf.update_weights(state.items(), version=1)
        return _outputs(hf)

    def zero_stage_in_use(self) -> int:
        return int(self.zero_stage)

    def weights(self) -> dict[str, torch.Tensor]:
        """Actor and critic weights (ZeRO < 3: whole on every rank)."""
        engines = (("actor", self.actor), ("critic", self.critic))
        return {f"{name}.{k}": v.detach().clone() for name, e in engines for k, v in e.module.state_dict().items()}


class InspectedRollout(RolloutWorker):
    def outputs(self) -> tuple[list, list]:
        return _outputs(self.engine)


def _learner(tiny_model: Path, zero_stage: int, ranks: int) -> TrainerGroup:
    config = build_ds_config(
        zero_stage=zero_stage,
        micro_batch_size=4,
        grad_accum_steps=1,
        world_size=ranks,
        lr=1e-2,  # large, so that one update visibly changes greedy outputs
        weight_decay=0.0,
        grad_clip=0.0,
        bf16=False,
        offload_optimizer=True,
        warmup_steps=0,
    )
    args = {
        "policy_path": str(tiny_model),
        "reference_path": str(tiny_model),
        "critic_path": str(tiny_model),
        "actor_ds_config": config,
        "critic_ds_config": config,
        "temperature": 1.0,
    }
    return TrainerGroup(InspectedPPOTrainer, RoleGroupSpec("learner", ranks, 0.5, 0), args)


def _ppo_update(learner: TrainerGroup, rollout: ActorPool) -> None:
    """One PPO update on sampled responses with arbitrary scores, the learner's shards as in the stage."""
    prompts = [[Message("user", f"Say something about {i}.")] for i in range(4 * learner.world_size)]
    gens = rollout.map_shards("generate", prompts, SamplingParams(temperature=1.0, max_new_tokens=8, seed=0))
    batch = collate_rollouts([g.prompt_token_ids for g in gens], [g.completions[0].token_ids for g in gens], 0)
    outputs = concat_outputs(learner.run("logprobs_and_values", [(s,) for s in split_batch(batch, learner.world_size)]))
    # The learner's log-probs of the sampled tokens (prompts left-padded, responses right-padded)
    # are the engine's own sampling log-probs: padding, positions and slicing line up.
    for row, g in enumerate(gens):
        want = torch.tensor(g.completions[0].logprobs)
        assert torch.allclose(outputs.logprobs[row, : len(want)], want, atol=2e-3)
        assert not outputs.logprobs[row, len(want) :].any()
    # ppo.old_logprobs=engine: the engines' log-probs stand in for the policy's, the rest is unchanged.
    given = torch.zeros_like(outputs.logprobs)
    for row, g in enumerate(gens):
        given[row, : len(g.completions[0].logprobs)] = torch.tensor(g.completions[0].logprobs)
    shards = zip(split_batch(batch, learner.world_size), torch.tensor_split(given, learner.world_size), strict=True)
    skipped = concat_outputs(learner.run("logprobs_and_values", list(shards)))
    assert torch.equal(skipped.logprobs, given)
    assert torch.equal(skipped.ref_logprobs, outputs.ref_logprobs) and torch.equal(skipped.values, outputs.values)
    scores = torch.linspace(-1.0, 1.0, len(gens))
    exp, _ = make_experience(
        batch, outputs, scores, torch.zeros(len(gens)), 0.0, "k1", 1.0, 0.95, True, behaviour_logprobs=given
    )
    # Truncated importance sampling on (cap 2): the learner's π_old against the engines' log-probs.
    shards = split_batch(exp, learner.world_size)
    stats = learner.run("train", [(s, 1, 4, 0.2, 0.2, 1.0, 0.0, 2.0) for s in shards])
    assert stats[0].optimizer_steps == 1 and stats[0].actor_grad_norm > 0
    # Both sides are float32 at the same weights: every weight is close to 1, none reaches the cap.
    assert stats[0].tis_weight_mean == pytest.approx(1.0, abs=1e-2) and stats[0].tis_clip_fraction == 0.0
    # One step per rank's shard: every token was measured before it, over all ranks.
    mismatch = stats[0].mismatch
    assert mismatch.tokens == batch.response_mask.sum()
    abs_mean, kl_mean = mismatch.means()
    assert 0 < abs_mean < 2e-3 and 0 <= kl_mean < 1e-4


def _engines_match_after_sync(learner: TrainerGroup, tiny_model: Path, engines: int) -> None:
    """`engines` vLLM engines of the tiny model, a PPO update of `learner`, a sync: the engines answer as it does."""
    engine = EngineSpec(model_path=str(tiny_model), backend="vllm", max_model_len=256, kv_cache_gib=1)
    pool = ActorPool(
        InspectedRollout,
        RoleGroupSpec("rollout", engines, 0.5, 0),
        (engine,),
        engine_env(RoleResources(cpus_per_worker=1)),
    )
    try:
        sync = PolicySync(learner, pool, "gloo", bucket_bytes=256 * 1024)
        before = pool.call_all("outputs")[0]
        _ppo_update(learner, pool)
        report = sync.push(version=1)
        # A small bucket size forces many buckets; the tiny model is ~26 MB of fp32.
        assert report.buckets > 1 and report.bytes > 20e6 and report.engines == engines
        want_tokens, want_scores = learner.run_all("learner_outputs", str(tiny_model))[0]
        for tokens, scores in pool.call_all("outputs"):
            assert tokens == want_tokens
            for got, want in zip(scores, want_scores, strict=True):
                assert got == pytest.approx(want, abs=1e-4)
        assert pool.call_all("policy_version") == [1] * engines
        assert want_tokens != before[0], "the PPO update should have changed the greedy outputs"
    finally:
        pool.shutdown()


class _SharedLearner:
    """A one-rank learner for several tests, handed to each in its untrained state.

    `fresh()` starts the group on first use and checkpoints its untrained state, then on each
    later use loads that checkpoint (weights, Adam state, step count), so no test sees what
    another's updates left, in either order. A group that a failed call has shut down
    (`TrainerGroup` does on any rank error, and the critic test ends with a refused update) is
    started again.
    """

    def __init__(self, tiny_model: Path, start: Path) -> None:
        self.tiny_model, self.start = tiny_model, start
        self.group: TrainerGroup | None = None

    def fresh(self) -> TrainerGroup:
        if self.group is not None and self.group.actors:
            assert self.group.run_all("load_checkpoint", str(self.start)) == [0]
            return self.group
        self.group = _learner(self.tiny_model, zero_stage=2, ranks=1)  # runs as stage 0 (one fp32 rank)
        self.group.run_all("save_checkpoint", str(self.start))
        return self.group

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.shutdown()


@pytest.fixture(scope="class")
def one_rank_learner(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, ray_cluster: None
) -> Iterator[_SharedLearner]:
    """The learner of `TestOneRankLearner`, started once for its tests.

    Class-scoped, not module-scoped: the idle rank holds half a CPU of the two-CPU cluster, which
    the file's later tests need whole (the RL-CAI runs, the placement check of the failing start).
    """
    shared = _SharedLearner(tiny_model, tmp_path_factory.mktemp("one-rank-learner") / "start")
    yield shared
    shared.shutdown()


class TestOneRankLearner:
    """One fp32 rank asked for ZeRO-2, which runs as stage 0 with DeepSpeedCPUAdam, shared by these tests."""

    def test_rollout_engines_match_the_ppo_learner_after_sync(
        self, tiny_model: Path, one_rank_learner: _SharedLearner
    ) -> None:
        """Two engines, each of which must take the update."""
        learner = one_rank_learner.fresh()
        # What the rank runs: a single fp32 rank is rewritten to stage 0 (no ZeRO partitions to gather).
        assert learner.run_all("zero_stage_in_use") == [0]
        _engines_match_after_sync(learner, tiny_model, engines=2)

    def test_one_critic_pass_trains_the_critic_as_a_second_pass_would(self, one_rank_learner: _SharedLearner) -> None:
        """ppo.value_forward=once: the rollout-time critic pass, kept, gives the update of a fresh pass."""
        learner = one_rank_learner.fresh()
        generator = torch.Generator().manual_seed(0)
        # Prompts and responses of different lengths: left- and right-padding both in play.
        prompts = [torch.randint(5, 1000, (n,), generator=generator).tolist() for n in (7, 3, 5, 6)]
        responses = [torch.randint(5, 1000, (n,), generator=generator).tolist() for n in (4, 9, 1, 6)]
        batch = collate_rollouts(prompts, responses, 0)
        scores = torch.tensor([1.0, -0.5, 0.25, -1.0])
        runs = {}
        # Both runs start from the learner's untrained checkpoint (saved by the fixture).
        for keep in (False, True):
            assert learner.run_all("load_checkpoint", str(one_rank_learner.start)) == [0]
            start = learner.run_all("weights")[0]
            outputs = concat_outputs(learner.run("logprobs_and_values", [(batch, None, keep)]))
            exp, _ = make_experience(batch, outputs, scores, torch.zeros(4), 0.05, "k1", 1.0, 0.95, True)
            stats = learner.run("train", [(exp, 1, 4, 0.2, 0.2, 1.0, 0.0)])[0]
            runs[keep] = (outputs, stats, learner.run_all("weights")[0])
        (out_twice, twice, w_twice), (out_once, once, w_once) = runs[False], runs[True]
        assert torch.allclose(out_once.values, out_twice.values, atol=1e-6)
        assert once.optimizer_steps == twice.optimizer_steps == 1
        assert once.critic_grad_norm > 0 and once.value_loss > 0
        for field in ("value_loss", "critic_grad_norm", "policy_loss", "actor_grad_norm"):
            assert getattr(once, field) == pytest.approx(getattr(twice, field), rel=1e-4), field
        critic = [k for k in w_once if k.startswith("critic.")]
        assert any(not torch.equal(w_once[k], start[k]) for k in critic), "the critic did not train"
        # Adam's first step moves each weight by about lr * sign(gradient). The critic's fresh head is
        # random (RewardModel.init_head), so its backbone gets gradients, and where one is at rounding
        # level the two runs' signs may differ: such a weight differs by up to 2 lr. Every other
        # weight must agree, and nearly all of them do.
        differing = total = 0
        for k, v in w_once.items():
            assert torch.allclose(v, w_twice[k], atol=2 * 1e-2 + 1e-6), k
            differing += int((v - w_twice[k]).abs().gt(1e-6).sum())
            total += v.numel()
        assert differing <= 1e-3 * total, (differing, total)
        # Kept passes are for one update over the rows they saw, in one epoch: anything else is refused.
        # (The refusal shuts the group down; the fixture starts it again should another test follow.)
        outputs = concat_outputs(learner.run("logprobs_and_values", [(batch, None, True)]))
        exp, _ = make_experience(batch, outputs, scores, torch.zeros(4), 0.05, "k1", 1.0, 0.95, True)
        with pytest.raises(Exception, match="value_forward=once"):
            learner.run("train", [(exp, 2, 4, 0.2, 0.2, 1.0, 0.0)])


@pytest.mark.usefixtures("ray_cluster")
def test_rollout_engines_match_the_zero3_learner_after_sync(tiny_model: Path) -> None:
    """ZeRO-3 with two ranks, whose shards are gathered per bucket, and one engine."""
    learner = _learner(tiny_model, zero_stage=3, ranks=2)
    try:
        assert learner.run_all("zero_stage_in_use") == [3, 3]
        _engines_match_after_sync(learner, tiny_model, engines=1)
    finally:
        learner.shutdown()


def _compose(overrides: list[str]) -> RunConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_run_config(compose(config_name="config", overrides=overrides))


def test_colocated_placement_is_gpu_only_and_says_so() -> None:
    with pytest.raises(ValueError, match="needs engine.device=cuda"):
        role_specs(_compose(["ppo.placement=colocated"]))
    gpu = ["ppo.placement=colocated", "engine=vllm-gpu", "cluster.learner.gpus_per_worker=0.5"]
    with pytest.raises(ValueError, match="fractional GPUs"):
        role_specs(_compose([*gpu, "cluster.rollout.gpus_per_worker=1"]))
    learner, rollout, _ = role_specs(_compose([*gpu, "cluster.rollout.gpus_per_worker=0.5"]))
    assert (learner.gpus_per_worker, rollout.gpus_per_worker) == (0.5, 0.5)
    # NCCL cannot link two processes on one GPU: colocated sync falls back to gloo.
    assert sync_backend(_compose([*gpu, "cluster.rollout.gpus_per_worker=0.5"])) == "gloo"


@pytest.mark.usefixtures("ray_cluster")
def test_a_learner_that_fails_to_start_takes_the_roles_started_beside_it_down(tiny_model: Path, tmp_path: Path) -> None:
    """The three roles start side by side; the learner fails, and the rollout engine is shut down with it.

    The critic starts from the reward model, here a missing folder: the learner rank fails in its
    constructor (and so does the reward scorer, which is never waited for), while the rollout
    engine (transformers, no vLLM) starts fine. The learner's error is raised, and every
    placement group the roles reserved is removed.
    """
    from rlaif.actors.cluster import reserve
    from rlaif.actors.trainer_group import TrainerGroupError
    from rlaif.stages.ppo_roles import ModelPaths, PPORoles, starts_together

    def live_groups() -> set[str]:
        return {k for k, pg in ray.util.placement_group_table().items() if pg["state"] != "REMOVED"}

    run = _compose([f"run_dir={tmp_path}", "engine=transformers", "engine.max_model_len=256"])
    assert starts_together(run, reward_model=True)
    before = live_groups()
    with pytest.raises(TrainerGroupError, match=r"learner: rank 0 failed in start"):
        PPORoles(run, ModelPaths(tiny_model, tmp_path / "missing"))
    assert live_groups() == before
    # Learner (1), rollout (0.5) and scorer (0.5) held both CPUs: all of them are free again.
    ray.util.remove_placement_group(reserve(RoleGroupSpec("all", 1, 2, 0), timeout_s=60))


def _policy_that_sometimes_says(tiny_model: Path, dest: Path, word: str, p_target: float) -> tuple[Path, int]:
    """The tiny model, changed to say `word` about `p_target` of the time; returns its folder and the token id.

    The random tiny policy is close to uniform over thousands of tokens, so a reward that counts one
    token would never see it. Here the output head is untied from the input embeddings and the
    token's row points along the mean final hidden state of sampled responses, which raises its
    logit in every context; the row's length is chosen by bisection for a mean probability of
    `p_target` over those response positions.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    token = tokenizer(word, add_special_tokens=False)["input_ids"][0]
    chats = [[{"role": "user", "content": r.prompt}] for r in load_prompts("builtin:red_team")[:16]]
    torch.manual_seed(0)
    with torch.no_grad():
        hidden = []
        for chat in chats:
            ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
            seq = model.generate(torch.tensor([ids]), do_sample=True, top_k=0, max_new_tokens=16)
            hidden.append(model.model(seq).last_hidden_state[0, len(ids) - 1 :])
        states = torch.cat(hidden)
        direction = states.mean(0) / states.mean(0).norm()
        model.config.tie_word_embeddings = False
        head = model.get_output_embeddings()
        head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
        low, high = 0.0, 16.0
        for _ in range(30):
            head.weight[token] = direction * (low + high) / 2
            p = (states @ head.weight.T).softmax(-1)[:, token].mean().item()
            low, high = ((low + high) / 2, high) if p < p_target else (low, (low + high) / 2)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest, token


@pytest.fixture(scope="module")
def policy_saying_the(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The policy of every RL-CAI run here, and the token its reward counts; built once (it is deterministic).

    The runs only read its folder: the stage writes its policy under `<run_dir>/rl_cai/`.
    """
    # About 0.8 per 16-token response at first: PPO has a signal from the first iteration.
    dest = tmp_path_factory.mktemp("policy-saying-the") / "policy"
    return _policy_that_sometimes_says(tiny_model, dest, " the", p_target=0.05)


def _rule_reward_run(policy_and_token: tuple[Path, int], run_dir: Path, extra: list[str]) -> Path:
    """The rule-reward RL-CAI run of `test_ppo_raises_a_rule_reward` into `run_dir`; returns `run_dir`."""
    from rlaif.stages.rl_cai import rl_cai_stage

    policy, token = policy_and_token
    overrides = [
        f"model.name={policy}",
        f"run_dir={run_dir}",
        f"ppo.policy={policy}",
        f"ppo.reward=token_count:{token}",
        "ppo.iterations=10",
        "ppo.prompts_per_iteration=16",
        "ppo.max_new_tokens=16",
        "ppo.mini_batch_size=8",
        "ppo.micro_batch_size=8",
        "ppo.ppo_epochs=4",
        "ppo.actor_lr=1e-3",
        "ppo.critic_lr=1e-3",
        "ppo.kl_coef=0.0",
        # Not the default -1, so that a penalised count (x.5) tells itself from an unpenalised one.
        "ppo.missing_eos_penalty=-0.5",
        "ppo.checkpoint_every=3",
        "engine.max_model_len=256",
        *extra,
    ]
    rl_cai_stage(StageContext(_compose(overrides), run_dir, policy, NullSink()))
    return run_dir


def _raw_rewards(run_dir: Path, iterations: int, per_iteration: int) -> list[float]:
    """Each iteration's mean token count, read from samples.jsonl before the missing-EOS penalty (-0.5)."""
    samples = list(read_jsonl(run_dir / "rl_cai" / "samples.jsonl"))
    return [
        sum(s["score"] + 0.5 * (not s["finished"]) for s in samples if s["iteration"] == i) / per_iteration
        for i in range(iterations)
    ]


@pytest.fixture(scope="module")
def sync_rule_run(
    policy_saying_the: tuple[Path, int], tmp_path_factory: pytest.TempPathFactory, ray_cluster: None
) -> Path:
    """The synchronous rule-reward run, shared by the test of PPO itself and the async comparison."""
    return _rule_reward_run(policy_saying_the, tmp_path_factory.mktemp("sync-rule"), [])


def test_ppo_raises_a_rule_reward(sync_rule_run: Path) -> None:
    tmp_path = sync_rule_run
    rows = list(read_jsonl(tmp_path / "rl_cai" / "metrics.jsonl"))
    samples = [json.loads(line) for line in (tmp_path / "rl_cai" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 10 * 16 and len({s["id"] for s in samples}) == len(samples)
    # Token counts are whole numbers: a response cut off at 16 tokens scores count - 0.5, a finished one count.
    for s in samples:
        assert (s["score"] % 1 == 0.5) is (not s["finished"]), s
        assert s["finished"] or s["tokens"] == 16
    # The tiny random policy rarely samples its end of sequence within 16 tokens.
    assert all(r["unfinished_fraction"] > 0.5 for r in rows)
    per_iteration = [[s for s in samples if s["iteration"] == i] for i in range(10)]
    assert [r["unfinished_fraction"] for r in rows] == [sum(not s["finished"] for s in it) / 16 for it in per_iteration]
    # Real PPO: 2 mini-batches x 4 epochs = 8 optimizer steps per batch; after the first the ratio moves.
    assert all(r["optimizer_steps"] == 8 for r in rows)
    assert any(r["clip_fraction"] > 0 for r in rows) and all(r["approx_kl"] > 0 for r in rows)
    # float32 engines against a float32 learner at the same weights: a real but tiny gap (measured ~1e-5 nats).
    for r in rows:
        assert 0 < r["logprob_mismatch_abs"] < 2e-3 and 0 <= r["logprob_mismatch_kl"] < 1e-4, r
        assert (r["tis_weight_mean"], r["tis_clip_fraction"]) == (1.0, 0.0)
    # The rise is read from the raw counts, before the missing-EOS penalty.
    rewards = [sum(s["score"] + 0.5 * (not s["finished"]) for s in it) / 16 for it in per_iteration]
    assert [r["iteration"] for r in rows] == list(range(10))
    # Every iteration samples from the policy of the previous update: synchronous, nothing stale.
    assert [r["sample_policy_version"] for r in rows] == list(range(10))
    assert all(r["staleness_hist"] == [16] and r["dropped_samples"] == r["regenerated_samples"] == 0 for r in rows)
    # Measured: about 0.4 -> 4 tokens per response over 10 iterations.
    first, last = sum(rewards[:2]) / 2, sum(rewards[-3:]) / 3
    assert last > first + 1.0 and last > 2 * first, f"rewards did not rise: {rewards}"
    manifest = read_manifest(tmp_path / "rl_cai")
    assert manifest is not None and manifest["counts"]["iterations"] == 10
    assert set(manifest["summary"]["time_total_s"]) >= {"generation_s", "scoring_s", "training_s", "sync_s"}
    # The wall clock spans each whole iteration: its timed phases and all the driver does between them
    # (the checkpoints every 3 iterations included).
    phases = ("generation", "scoring", "learner_forward", "training", "sync")
    for r in rows:
        assert r["time_wall_s"] >= sum(r[f"time_{k}_s"] for k in phases), r
    total_wall = manifest["summary"]["time_total_s"]["wall_s"]
    assert total_wall == pytest.approx(sum(r["time_wall_s"] for r in rows))
    assert (tmp_path / "rl_cai" / "policy" / "model.safetensors").is_file()
    assert not (tmp_path / "rl_cai" / "checkpoint").exists()


@pytest.mark.usefixtures("ray_cluster")
def test_async_rollout_keeps_the_staleness_bound_and_learns_as_the_synchronous_loop(
    policy_saying_the: tuple[Path, int], tmp_path: Path, sync_rule_run: Path
) -> None:
    """ppo.max_staleness=1: the engines sample the next batch while the learner trains.

    The same run as `test_ppo_raises_a_rule_reward` but asynchronous: every trained sample is at
    most one version older than the policy it updates (checked on every iteration), the decoupled
    objective's weights are logged, and the reward rises as in the synchronous run over the same
    samples, within noise.
    """
    run_dir = _rule_reward_run(policy_saying_the, tmp_path, ["ppo.max_staleness=1"])
    rows = list(read_jsonl(run_dir / "rl_cai" / "metrics.jsonl"))
    samples = list(read_jsonl(run_dir / "rl_cai" / "samples.jsonl"))
    assert [r["iteration"] for r in rows] == list(range(10))
    assert len(samples) == 10 * 16 and len({s["id"] for s in samples}) == len(samples)
    # The bound, sample by sample: iteration k updates policy version k.
    for s in samples:
        assert 0 <= s["iteration"] - s["policy_version"] <= 1, s
    # And really asynchronous: after the first batch, each was sampled while the previous update ran.
    assert rows[0]["staleness_hist"] == [16]
    assert all(r["staleness_hist"] == [0, 16] and r["sample_policy_version"] == r["iteration"] - 1 for r in rows[1:])
    assert all(r["dropped_samples"] == 0 and r["regenerated_samples"] == 0 for r in rows)
    # The decoupled objective: π_prox / π_behaviour, capped at the default 2; 1 at the behaviour's own weights.
    assert rows[0]["tis_weight_mean"] == pytest.approx(1.0, abs=1e-2)
    for r in rows[1:]:
        assert r["tis_weight_mean"] > 0 and 1.0 <= r["tis_weight_max"] <= 2.0 and 0 <= r["tis_clip_fraction"] < 1, r
    # The kernel mismatch is measured on samples of the learner's own version only: iteration 0 here.
    assert rows[0]["logprob_mismatch_abs"] < 2e-3 and all(r["logprob_mismatch_abs"] is None for r in rows[1:])
    sync_rewards, async_rewards = _raw_rewards(sync_rule_run, 10, 16), _raw_rewards(run_dir, 10, 16)
    first, last = sum(async_rewards[:2]) / 2, sum(async_rewards[-3:]) / 3
    assert last > first + 1.0 and last > 2 * first, f"async rewards did not rise: {async_rewards}"
    # Within noise of the synchronous curve over the same samples: the last three iterations' means
    # differ by less than four standard errors of a difference of two 48-sample means.
    tail = [list(read_jsonl(d / "rl_cai" / "samples.jsonl")) for d in (sync_rule_run, run_dir)]
    counts = [[s["score"] + 0.5 * (not s["finished"]) for s in t if s["iteration"] >= 7] for t in tail]
    var = [sum((c - sum(cs) / len(cs)) ** 2 for c in cs) / (len(cs) - 1) for cs in counts]
    stderr = (var[0] / len(counts[0]) + var[1] / len(counts[1])) ** 0.5
    gap = abs(sum(sync_rewards[-3:]) / 3 - last)
    assert gap < 4 * stderr, f"sync {sync_rewards} against async {async_rewards}: gap {gap:.2f}, stderr {stderr:.2f}"


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize(
    ("estimator", "extra"),
    [
        # GRPO as its paper has it: std-normalised groups, the KL (k3) as a loss term, sequence-mean tokens.
        ("grpo", ["ppo.kl_in=loss", "ppo.kl_estimator=k3", "ppo.kl_coef=0.01", "ppo.loss_agg=seq_mean"]),
        # RLOO with Dr. GRPO's constant-length normalisation.
        ("rloo", ["ppo.loss_agg=seq_sum"]),
        # REINFORCE++ on a prompt file read in file order (ppo.prompt_file), six prompts wrapping around.
        ("reinforce_pp", ["prompt_file"]),
    ],
)
def test_critic_free_estimators_raise_a_rule_reward(
    policy_saying_the: tuple[Path, int], tmp_path: Path, estimator: str, extra: list[str]
) -> None:
    """Each critic-free estimator, end to end through the stage: no critic, and the reward rises."""
    from rlaif.stages.rl_cai import rl_cai_stage

    policy, token = policy_saying_the
    file_ids: list[str] = []
    if "prompt_file" in extra:
        records = load_prompts("builtin:red_team")[:6]
        file_ids = [p.id for p in records]
        data = tmp_path / "prompts.jsonl"
        data.write_text("".join(json.dumps({"id": p.id, "prompt": p.prompt}) + "\n" for p in records))
        extra = [f"ppo.prompt_file={data}"]
    overrides = [
        f"model.name={policy}",
        f"run_dir={tmp_path}",
        f"ppo.policy={policy}",
        f"ppo.reward=token_count:{token}",
        f"ppo.advantage={estimator}",
        "ppo.iterations=8",
        # Four prompts, four responses each: the groups GRPO and RLOO compare.
        "ppo.prompts_per_iteration=4",
        "ppo.samples_per_prompt=4",
        "ppo.max_new_tokens=16",
        "ppo.mini_batch_size=8",
        "ppo.micro_batch_size=8",
        "ppo.ppo_epochs=4",
        "ppo.actor_lr=1e-3",
        "ppo.kl_coef=0.0",
        "ppo.missing_eos_penalty=0.0",
        "ppo.checkpoint_every=0",
        "engine.max_model_len=256",
        *extra,
    ]
    run = _compose(overrides)
    rl_cai_stage(StageContext(run, tmp_path, policy, NullSink()))

    rows = list(read_jsonl(tmp_path / "rl_cai" / "metrics.jsonl"))
    samples = [json.loads(line) for line in (tmp_path / "rl_cai" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and len(samples) == 8 * 16
    # No value model: nothing regressed, no critic gradient, no values.
    assert all(r["value_loss"] == 0.0 and r["critic_grad_norm"] == 0.0 and r["value_mean"] == 0.0 for r in rows)
    assert all(r["optimizer_steps"] == 8 and r["actor_grad_norm"] > 0 for r in rows)
    # The KL loss term acts only where asked (the policy leaves the reference at the first optimizer step).
    if "ppo.kl_in=loss" in extra:
        assert all(r["kl_loss"] > 0 for r in rows)
    else:
        assert all(r["kl_loss"] == 0.0 for r in rows)
    # Each prompt's four responses sit together, as the group baselines assume.
    for it in range(8):
        prompts = [s["prompt_id"] for s in samples if s["iteration"] == it]
        assert all(len(set(prompts[g : g + 4])) == 1 for g in range(0, 16, 4))
        if file_ids:  # iteration k takes the file's rows 4k .. 4k + 3, wrapping around after the sixth
            assert prompts[::4] == [file_ids[(4 * it + j) % 6] for j in range(4)], (it, prompts[::4])
    rewards = [sum(s["score"] for s in samples if s["iteration"] == i) / 16 for i in range(8)]
    # Measured: grpo 1.4 -> 3.1, rloo 2.3 -> 7.0, reinforce_pp 2.5 -> 5.4 tokens per response.
    first, last = sum(rewards[:2]) / 2, sum(rewards[-2:]) / 2
    assert last > first + 1.0, f"{estimator}: rewards did not rise: {rewards}"
    manifest = read_manifest(tmp_path / "rl_cai")
    assert manifest is not None and manifest["config"]["ppo"]["advantage"] == estimator
