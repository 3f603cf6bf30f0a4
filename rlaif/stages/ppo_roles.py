"""The role groups of an RL-CAI run and how they are placed: learner, rollout engines, reward.

`start_roles` builds, from config:

- the learner: a `TrainerGroup` of `PPOTrainer` ranks (`cluster.learner`);
- the rollout pool: `RolloutWorker` actors holding the policy in vLLM (`cluster.rollout`);
- the reward: a pool of `RewardScorer` actors over ``<run_dir>/reward_model/model``
  (`cluster.reward_scorer`), or a registered rule reward (`rlaif.core.rewards`) run in
  the driver, behind one `Scorer` protocol;
- the weight-sync group between learner rank 0 and every engine (`PolicySync`), once all
  of them are up.

Where no two roles can share a GPU the three start side by side and are waited for once
(`starts_together`); otherwise one after another.

Placement (``ppo.placement``): ``disaggregated`` gives each role its own bundles (CPUs
or whole GPUs); ``colocated`` gives learner and rollout fractional GPUs of the same
devices and has the engines sleep (free their GPU memory) while the learner works.
Colocation is a GPU feature: on CPU it fails with a one-line error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ray
import torch

from rlaif.actors.cluster import RoleGroupSpec
from rlaif.actors.policy_sync import PolicySync
from rlaif.actors.pool import ActorPool, engine_env, role_threads, split_evenly
from rlaif.actors.reward_scorer import RewardScorer
from rlaif.actors.rollout import RolloutWorker
from rlaif.actors.trainer_group import TrainerGroup, malloc_env
from rlaif.config import PPOConfig, RoleResources, RunConfig, engine_spec
from rlaif.core.advantages import uses_critic
from rlaif.core.experience import ExperienceBatch, PolicyOutputs, RolloutBatch, concat_outputs, split_batch
from rlaif.core.io import read_manifest
from rlaif.core.rewards import RewardSample, RuleReward, build_rule_reward
from rlaif.engines.models import resolve_model
from rlaif.trainers.ds_config import build_ds_config
from rlaif.trainers.ppo import PPOTrainer, PPOTrainStats

log = logging.getLogger(__name__)

REWARD_MODEL = "reward_model"


class Scorer(Protocol):
    """Scores sampled responses, one float each, in order."""

    def score(self, samples: Sequence[RewardSample]) -> list[float]: ...

    def wait_ready(self) -> None: ...

    def shutdown(self) -> None: ...


class RewardModelScorer:
    """The reward model, sharded over a pool of `RewardScorer` actors."""

    def __init__(self, pool: ActorPool) -> None:
        self.pool = pool

    def score(self, samples: Sequence[RewardSample]) -> list[float]:
        shards = split_evenly(samples, len(self.pool))
        refs = [
            actor.score.remote([s.prompt for s in shard], [s.response for s in shard], [s.finished for s in shard])
            for actor, shard in zip(self.pool.actors, shards, strict=True)
            if shard
        ]
        return [r for part in ray.get(refs) for r in part]

    def wait_ready(self) -> None:
        self.pool.wait_ready()

    def shutdown(self) -> None:
        self.pool.shutdown()


class RuleScorer:
    """A registered rule reward, computed in the driver (it needs no model)."""

    def __init__(self, fn: RuleReward) -> None:
        self.fn = fn

    def score(self, samples: Sequence[RewardSample]) -> list[float]:
        return self.fn(samples)

    def wait_ready(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


@dataclass(frozen=True)
class ModelPaths:
    """The policy the run starts from (also the KL reference) and the reward model folder (if used)."""

    policy: Path
    reward_model: Path | None


def model_paths(run: RunConfig, run_dir: Path, base_model: Path) -> ModelPaths:
    """Resolve ``ppo.policy`` (null: the SFT stage's model, else the base) and the reward model folder."""
    cfg, sft_model = run.ppo, run_dir / "sft" / "model"
    if cfg.policy:
        policy = resolve_model(cfg.policy)
    elif read_manifest(run_dir / "sft") is not None and (sft_model / "config.json").is_file():
        policy = sft_model.resolve()
    else:
        log.warning("rl_cai: no finished SFT model at %s; starting from the base model %s", sft_model, base_model)
        policy = base_model
    if cfg.reward != REWARD_MODEL:
        build_rule_reward(cfg.reward)  # fail now on an unknown rule, not after the engines start
        return ModelPaths(policy, None)
    reward_model = run_dir / "reward_model" / "model"
    if not (reward_model / "config.json").is_file():
        raise ValueError(
            f"ppo.reward=reward_model: no reward model at {reward_model}; run the reward_model stage first "
            "or set ppo.reward to a rule reward"
        )
    return ModelPaths(policy, reward_model.resolve())


def sync_backend(run: RunConfig) -> str:
    """gloo on CPU; NCCL on GPUs unless colocated (NCCL cannot put two ranks of a group on one GPU)."""
    chosen = run.ppo.sync_backend
    if chosen == "auto":
        return "nccl" if run.engine.device == "cuda" and run.ppo.placement == "disaggregated" else "gloo"
    if chosen == "nccl" and run.ppo.placement == "colocated":
        raise ValueError("ppo.sync_backend=nccl cannot link a learner and an engine on the same GPU; use gloo or auto")
    return chosen


def uses_engine_logprobs(run: RunConfig) -> bool:
    """Whether the old log-probs are the rollout engines' sampling log-probs (`ppo.old_logprobs`).

    `auto` picks the engines' where both sides run float32 and no truncated importance
    sampling is asked for (`ppo.tis_cap`), which needs the learner's own π_old beside them.
    """
    if run.ppo.old_logprobs == "auto":
        return not run.deepspeed.bf16 and run.engine.dtype == "float32" and not run.ppo.tis_cap
    return run.ppo.old_logprobs == "engine"


def reuses_value_forward(run: RunConfig) -> bool:
    """Whether the update trains the critic on its rollout-time passes (`ppo.value_forward`).

    A shortcut valid only where the update is a single optimizer step in a single epoch:
    then the critic's first training pass would recompute the rollout-time values exactly.
    PPO's default of several mini-batches per batch rules it out, and `auto` then picks twice.

    Raises:
        ValueError: `once` where the update is not one optimizer step of one epoch, or under ZeRO-3.
    """
    cfg = run.ppo
    if not uses_critic(cfg.advantage):
        return False  # no critic, no critic passes (PPOConfig rejects value_forward=once here)
    samples = cfg.prompts_per_iteration * cfg.samples_per_prompt
    fits = cfg.ppo_epochs == 1 and cfg.mini_batch_size == samples and run.deepspeed.zero_stage < 3
    if cfg.value_forward == "once" and not fits:
        raise ValueError(
            "ppo.value_forward=once needs ppo.ppo_epochs=1, ppo.mini_batch_size = prompts_per_iteration x "
            f"samples_per_prompt ({samples}) and deepspeed.zero_stage < 3; got {cfg.ppo_epochs}, "
            f"{cfg.mini_batch_size} and {run.deepspeed.zero_stage} (use twice or auto)"
        )
    if cfg.value_forward == "auto":
        return fits and run.engine.device == "cpu"
    return cfg.value_forward == "once"


def role_specs(run: RunConfig) -> tuple[RoleGroupSpec, RoleGroupSpec, RoleGroupSpec]:
    """Learner, rollout and reward-scorer resources from ``cluster.*``, checked against ``ppo.placement``."""
    c, strategy = run.cluster, run.cluster.placement_strategy
    learner, rollout = c.learner, c.rollout
    if run.ppo.placement == "colocated":
        if run.engine.device != "cuda":
            raise ValueError(
                "ppo.placement=colocated shares GPUs between learner and rollout engines (the engines sleep while "
                "the learner trains) and needs engine.device=cuda; on CPU use ppo.placement=disaggregated"
            )
        shares = (learner.gpus_per_worker, rollout.gpus_per_worker)
        if learner.num_workers != rollout.num_workers or not all(0 < g < 1 for g in shares) or sum(shares) > 1:
            raise ValueError(
                "ppo.placement=colocated needs as many rollout workers as learner ranks and fractional GPUs "
                f"summing to <= 1 (e.g. 0.5 each); got learner {learner}, rollout {rollout}"
            )

    def spec(name: str, r: RoleResources) -> RoleGroupSpec:
        return RoleGroupSpec(name, r.num_workers, r.cpus_per_worker, r.gpus_per_worker, strategy)

    return spec("learner", learner), spec("rollout", rollout), spec("reward_scorer", c.reward_scorer)


def starts_together(run: RunConfig, reward_model: bool) -> bool:
    """Whether learner, rollout and (with `reward_model`) reward scorers may start side by side.

    Either way each role reserves its placement group (waiting until it is placed) before its
    actors are requested, one role after another, and keeps it to the end: the cluster must hold
    all three groups at once in both orders, a cluster too small fails in `reserve` in both, and
    no two half-placed groups can wait on each other. Only the actors' constructors overlap.
    That is unsafe where two roles can land on one GPU (``ppo.placement=colocated``, or more
    than one role given fractions of a GPU): a GPU engine sizes its cache from the memory it
    finds free as it starts, which a model loading beside it would change. Those start in turn
    (docs/design.md §2).
    """
    if run.ppo.placement == "colocated":
        return False
    specs = role_specs(run)
    roles = specs if reward_model else specs[:2]
    return sum(1 for r in roles if r.gpus_per_worker % 1) <= 1


def async_thread_warning(run: RunConfig, cores: int) -> str | None:
    """With ``ppo.max_staleness`` >= 1 on one machine, rollout and learner threads run at the same time.

    In the synchronous loop the roles take turns and each may use every core; sampling ahead
    overlaps the rollout engines with the learner, and OpenMP threads beyond the free cores
    spin-wait (docs/design.md §7). Returns a warning when the two roles' threads exceed the
    machine's cores on a local cluster, else None.
    """
    c = run.cluster
    if not run.ppo.max_staleness or c.address is not None or run.engine.device != "cpu":
        return None
    learner = role_threads(c.learner) * c.learner.num_workers
    rollout = role_threads(c.rollout) * c.rollout.num_workers
    if learner + rollout <= cores:
        return None
    return (
        f"ppo.max_staleness={run.ppo.max_staleness} runs rollout and learner at once, but their threads "
        f"({rollout} + {learner}) exceed this machine's {cores} cores; the two will slow each other down. "
        "Give each its own cores: cluster.rollout.threads_per_worker and cluster.learner.cpus_per_worker"
    )


def learner_args(run: RunConfig, paths: ModelPaths, world_size: int) -> dict[str, Any]:
    """The `PPOTrainer` constructor arguments (rank, world size and master address come from the group)."""
    cfg, ds = run.ppo, run.deepspeed
    per_step = cfg.micro_batch_size * world_size
    if cfg.mini_batch_size % per_step:
        raise ValueError(
            f"ppo.mini_batch_size ({cfg.mini_batch_size}) must be a multiple of micro_batch_size x learner ranks "
            f"({cfg.micro_batch_size} x {world_size})"
        )

    def ds_config(lr: float) -> dict[str, Any]:
        return build_ds_config(
            zero_stage=ds.zero_stage,
            micro_batch_size=cfg.micro_batch_size,
            grad_accum_steps=cfg.mini_batch_size // per_step,
            world_size=world_size,
            lr=lr,
            weight_decay=0.0,
            grad_clip=cfg.grad_clip,
            bf16=ds.bf16,
            offload_optimizer=ds.offload_optimizer,
            warmup_steps=0,
        )

    critic = uses_critic(cfg.advantage)
    return {
        "policy_path": str(paths.policy),
        "reference_path": str(paths.policy),
        # InstructGPT / OpenRLHF start the value model from the reward model; a rule reward has none.
        # A critic-free estimator has no value model at all.
        "critic_path": str(paths.reward_model or paths.policy) if critic else None,
        "actor_ds_config": ds_config(cfg.actor_lr),
        "critic_ds_config": ds_config(cfg.critic_lr) if critic else None,
        "temperature": cfg.temperature,
        "gradient_checkpointing": ds.gradient_checkpointing,
        "seed": run.seed,
        "trust_remote_code": run.model.trust_remote_code,
    }


class PPORoles:
    """Every actor of an RL-CAI run, and the calls that fan out over the learner's ranks."""

    def __init__(self, run: RunConfig, paths: ModelPaths) -> None:
        self.colocated = run.ppo.placement == "colocated"
        # The engines' sampling log-probs stand in for the learner's old log-probs (`policy_outputs`).
        self.engine_logprobs = uses_engine_logprobs(run)
        # The update trains the critic on its rollout-time passes (one critic pass per sample; only
        # where the update is one optimizer step of one epoch, `reuses_value_forward`).
        self.keep_value_graph = reuses_value_forward(run)
        learner_spec, rollout_spec, scorer_spec = role_specs(run)
        backend = sync_backend(run)
        if warning := async_thread_warning(run, os.cpu_count() or 1):
            log.warning("rl_cai: %s", warning)
        # Side by side: every role is requested without waiting, then all are waited for (`starts_together`).
        together = starts_together(run, reward_model=paths.reward_model is not None)
        log.info(
            "rl_cai: starting %d learner rank(s) (%s) and %d rollout engine(s) (%s, weight sync over %s), %s",
            learner_spec.num_workers,
            "actor, critic, reference" if uses_critic(run.ppo.advantage) else "actor, reference; no critic",
            rollout_spec.num_workers,
            run.ppo.placement,
            backend,
            "side by side" if together else "one after another",
        )
        wait = not together
        started: list[TrainerGroup | ActorPool | Scorer] = []
        try:
            self.learner = TrainerGroup(
                PPOTrainer,
                learner_spec,
                learner_args(run, paths, learner_spec.num_workers),
                malloc=run.cluster.trainer_malloc,
                wait=wait,
            )
            started.append(self.learner)
            spec = dataclasses.replace(engine_spec(run, str(paths.policy)), enable_sleep_mode=self.colocated)
            self.rollout = ActorPool(
                RolloutWorker,
                rollout_spec,
                (spec,),
                engine_env(run.cluster.rollout),
                wait=wait,
            )
            started.append(self.rollout)
            self.scorer = _make_scorer(run, paths, scorer_spec, wait)
            started.append(self.scorer)
            # In role order: the first failure raised is the one re-raised, after every role
            # (ready or still starting) is shut down below.
            for role in started:
                role.wait_ready()
            self.sync = PolicySync(self.learner, self.rollout, backend, run.ppo.sync_bucket_mb << 20)
        except BaseException:
            for role in reversed(started):
                role.shutdown()
            raise

    def policy_outputs(self, rollout: RolloutBatch, engine_logprobs: torch.Tensor | None = None) -> PolicyOutputs:
        """Log-probs, reference log-probs and values, each rank computing its contiguous shard.

        With `engine_logprobs` (batch, response_len), the engines' sampling log-probs stand in
        for the policy's and the learner skips that forward pass (`ppo.old_logprobs`). With
        `ppo.value_forward` once (one-step updates only), the ranks keep their critic passes
        for the next `train`.
        """
        world = self.learner.world_size
        shards = split_batch(rollout, world)
        # tensor_split sizes its parts as split_batch does: the first n % world get one more row.
        given: Sequence[torch.Tensor | None] = (
            [None] * world if engine_logprobs is None else torch.tensor_split(engine_logprobs, world)
        )
        args = [(shard, lp, self.keep_value_graph) for shard, lp in zip(shards, given, strict=True)]
        return concat_outputs(self.learner.run("logprobs_and_values", args))

    def train(self, experience: ExperienceBatch, cfg: PPOConfig, kl_coef: float) -> PPOTrainStats:
        """PPO epochs on every rank's shard of the experience; the stats are global (rank 0's copy).

        `kl_coef`: β now; a loss term's coefficient under ``ppo.kl_in=loss`` (in the reward otherwise).
        """
        world = self.learner.world_size
        args = (
            cfg.ppo_epochs,
            cfg.mini_batch_size // world,
            cfg.clip_eps,
            cfg.value_clip,
            cfg.vf_coef,
            cfg.entropy_coef,
            cfg.tis_cap or 0.0,
            kl_coef if cfg.kl_in == "loss" else 0.0,
            cfg.kl_estimator,
            cfg.loss_agg,
            cfg.max_new_tokens,
        )
        stats: PPOTrainStats = self.learner.run("train", [(shard, *args) for shard in split_batch(experience, world)])[
            0
        ]
        return stats

    def engines_sleep(self) -> None:
        """Colocated: free the engines' GPU memory for the learner (a no-op when disaggregated)."""
        if self.colocated:
            self.rollout.call_all("sleep")

    def engines_wake(self) -> None:
        if self.colocated:
            self.rollout.call_all("wake_up")

    def shutdown(self) -> None:
        for role in (self.scorer, self.rollout, self.learner):
            role.shutdown()


def _make_scorer(run: RunConfig, paths: ModelPaths, spec: RoleGroupSpec, wait: bool) -> Scorer:
    """The reward: a rule run in the driver, or reward scorers (not waited for unless `wait`)."""
    if paths.reward_model is None:
        return RuleScorer(build_rule_reward(run.ppo.reward))
    args = (
        str(paths.reward_model),
        run.engine.device,
        run.engine.dtype,
        run.ppo.micro_batch_size,
        run.reward_model.max_len,
        run.model.trust_remote_code,
    )
    env = {
        **engine_env(run.cluster.reward_scorer),
        # Scoring is torch forward passes, as on the learner: keep their freed activations too.
        **malloc_env(run.cluster.trainer_malloc),
    }
    return RewardModelScorer(ActorPool(RewardScorer, spec, args, env, wait=wait))
