"""The PPO learner (RL-CAI, docs/design.md §1 stage 2 step 7): one DeepSpeed rank of actor, critic and reference.

`PPOTrainer` is plain Python holding one rank of a data-parallel group;
`rlaif.actors.trainer_group.TrainerGroup` runs N of them as Ray actors. Each rank holds

- the policy (actor): a causal LM in its own DeepSpeed engine;
- the value model (critic): a causal-LM backbone with a scalar head read at every
  position (`ValueModel`), in a second DeepSpeed engine, started from the reward
  model's folder as in InstructGPT / OpenRLHF (or from a causal LM with a fresh head,
  `RewardModel.init_head`); none at all under a critic-free estimator (``ppo.advantage``
  grpo, rloo, reinforce_pp: ``critic_path=None``), which then costs no memory or time;
- the reference: the frozen starting (SFT) policy, a plain module with no optimizer.

The driver calls `logprobs_and_values` on rank shards of a `RolloutBatch`, builds the
advantages itself over the global batch (`rlaif.core.experience.make_experience`),
then `train` on rank shards of the `ExperienceBatch`: clipped surrogate
(`ppo_policy_loss`, optionally with truncated importance weights, `ppo.tis_cap`),
clipped value loss, an optional KL-to-reference loss term (`ppo.kl_in=loss`), an optional
entropy bonus, for `ppo_epochs` passes in shuffled
mini-batches, several optimizer steps per batch. Log-probs are of the logits divided
by the sampling temperature: the distribution the rollout engines sampled from.

Before the first optimizer step of an update the actor still has the weights that
sampled the batch, so `train` compares its log-probs there with the engines'
(`logprob_mismatch`): the rollout/learner mismatch, measured without an extra pass.

A shortcut for updates of one optimizer step over the shard in one epoch (not PPO's
default): the critic's first training forward pass would then compute exactly the values
it computed at rollout time, so `logprobs_and_values(keep_value_graph=True)` keeps that
pass's graph and `train` backpropagates the value loss through it: one critic forward
pass per sample instead of two (`ppo.value_forward=once`).

Weight sync (docs/design.md §5): rank 0 joins a broadcast group with the rollout engines
(`join_sync_group`); `send_weights` is called on every rank, because under ZeRO-3 each
bucket's parameters are gathered collectively (`deepspeed.zero.GatheredParameters`),
one bucket at a time, never the whole model at once; rank 0 then broadcasts it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rlaif.core.advantages import KLKind
from rlaif.core.buckets import TensorMeta, plan_buckets
from rlaif.core.experience import (
    ExperienceBatch,
    PolicyOutputs,
    RolloutBatch,
    index_batch,
    position_ids_from_mask,
    trim_padding,
)
from rlaif.core.losses import (
    LogprobMismatch,
    entropy_from_logits,
    kl_loss,
    logprob_mismatch,
    ppo_policy_loss,
    truncated_is_weights,
    value_loss,
)
from rlaif.core.tensor_ops import masked_mean
from rlaif.engines.weight_sync import TIMEOUT_S, SyncGroup, SyncStats, send_state
from rlaif.trainers import distributed as D
from rlaif.trainers.reward import RewardModel


class PPOTrainStats(NamedTuple):
    """Means over every micro-batch of every rank of one `train` call (grad norms: over optimizer steps).

    `tis_weight_mean` / `tis_clip_fraction`: the truncated importance weights over real tokens
    (1 and 0 with `tis_cap` 0). `mismatch`: sums over every rank of the actor-vs-engine log-prob
    gap on the micro-batches before the first optimizer step (`behaviour_logprobs`).
    `kl_loss`: the KL-to-reference loss term before its coefficient (0 when the KL is in the
    reward). Without a critic, `value_loss` and `critic_grad_norm` are 0.
    """

    policy_loss: float
    kl_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float
    actor_grad_norm: float
    critic_grad_norm: float
    optimizer_steps: int
    tis_weight_mean: float
    tis_clip_fraction: float
    mismatch: LogprobMismatch
    seconds: float


class ValueModel(torch.nn.Module):
    """``forward(input_ids, attention_mask, position_ids) -> (batch, seq_len)`` values, one per position.

    Wraps a transformers sequence-classification model (backbone + ``score`` head)
    and applies the head at every position instead of only the last one.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        backbone = getattr(self.model, self.model.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        values: torch.Tensor = self.model.score(hidden).squeeze(-1).float()
        return values


class PPOTrainer:
    """One rank of the PPO learner group."""

    def __init__(
        self,
        policy_path: str,
        reference_path: str,
        critic_path: str | None,
        actor_ds_config: dict[str, Any],
        critic_ds_config: dict[str, Any] | None,
        temperature: float,
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
        gradient_checkpointing: bool = False,
        seed: int = 0,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if temperature <= 0:
            raise ValueError(f"PPO needs a sampling temperature > 0, got {temperature}")
        D.init_process_group(rank, world_size, master_addr, master_port, D.default_backend())
        self.rank, self.world_size, self.master_addr = rank, world_size, master_addr
        self.temperature, self.seed = temperature, seed
        torch.manual_seed(seed)
        self.tokenizer = AutoTokenizer.from_pretrained(policy_path, trust_remote_code=trust_remote_code)
        pad_id = D.pad_token_id(self.tokenizer)
        dtype = torch.bfloat16 if actor_ds_config.get("bf16", {}).get("enabled") else torch.float32
        policy = AutoModelForCausalLM.from_pretrained(policy_path, dtype=dtype, trust_remote_code=trust_remote_code)
        # None under a critic-free estimator: no value model is loaded, trained or checkpointed.
        critic = None
        if critic_path is not None:
            if critic_ds_config is None:
                raise ValueError("a critic_path needs a critic_ds_config")
            critic = ValueModel(RewardModel.from_pretrained(critic_path, pad_id, dtype, trust_remote_code).model)
        if gradient_checkpointing:
            for m in (policy, *([] if critic is None else [critic.model])):
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.actor = D.create_engine(policy, actor_ds_config)
        self.critic = None if critic is None else D.create_engine(critic, critic_ds_config)
        self.reference = AutoModelForCausalLM.from_pretrained(
            reference_path, dtype=dtype, trust_remote_code=trust_remote_code
        ).to(self.actor.device)
        self.reference.eval().requires_grad_(False)
        self.micro_batch_size = int(self.actor.train_micro_batch_size_per_gpu())
        self.zero_stage = D.zero_stage(self.actor)
        self.step = 0
        self.sync_group: SyncGroup | None = None
        # Parameters in a fixed order: both ends of the broadcast derive buckets from it.
        self._sync_params = list(self.actor.module.named_parameters())
        # The critic forward passes `train` will backpropagate through (`keep_value_graph`).
        self._held: _HeldValues | None = None

    # --- rollout-time outputs -------------------------------------------------

    def logprobs_and_values(
        self, batch: RolloutBatch, policy_logprobs: torch.Tensor | None = None, keep_value_graph: bool = False
    ) -> PolicyOutputs:
        """Policy and reference log-probs and critic values for this rank's shard; all ranks call together.

        `policy_logprobs` (batch, response_len), when given, are the rollout engine's sampling
        log-probs of the response tokens; they are returned as the policy's, and the policy's
        forward pass is skipped.

        `keep_value_graph`: run the critic with gradients, one micro-batch per pass, and keep
        the graphs for the next `train` call, which then trains the critic on these passes
        instead of running it again. The shard must be one optimizer step (micro-batch x
        gradient accumulation rows) and ZeRO below stage 3 (whose parameters are released
        between passes); `train` must then be one epoch over this very shard.

        Returns (batch, response_len) tensors on CPU, 0 on padding (values: 0 everywhere
        without a critic).
        """
        n = batch.prompt_ids.shape[0]
        if policy_logprobs is not None and policy_logprobs.shape != batch.response_ids.shape:
            raise ValueError(
                f"policy_logprobs has shape {tuple(policy_logprobs.shape)}, the responses "
                f"{tuple(batch.response_ids.shape)}"
            )
        if keep_value_graph and self.critic is None:
            raise ValueError(f"rank {self.rank}: keep_value_graph needs a critic, and this learner has none")
        if keep_value_graph:
            assert self.critic is not None
            step_rows = self.micro_batch_size * int(self.critic.gradient_accumulation_steps())
            if n != step_rows or self.zero_stage == 3:
                raise ValueError(
                    f"rank {self.rank}: keeping the critic's graphs (ppo.value_forward=once) needs a shard of "
                    f"exactly one optimizer step ({step_rows} rows, got {n}) and ZeRO stage < 3 (got {self.zero_stage})"
                )
        self._held = None  # graphs of an update that never came
        self._set_mode(train=False)
        out = [torch.zeros(batch.response_ids.shape) for _ in PolicyOutputs._fields]
        held: list[tuple[torch.Tensor, torch.Tensor]] = []
        # Rows of similar length share a pass, which then carries less padding (`trim_padding`).
        lengths = (batch.prompt_mask.sum(1) + batch.response_mask.sum(1)).tolist()
        by_length = sorted(range(n), key=lambda i: lengths[i])
        for chunk in D.lockstep_chunks(by_length, self.micro_batch_size):
            # A rank out of rows still runs a pass: ZeRO-3 gathers parameters collectively.
            index = torch.tensor(chunk or [0])
            rows = trim_padding(index_batch(batch, index))
            width = rows.response_ids.shape[1]
            mask = rows.response_mask.to(self.actor.device)
            with torch.no_grad():
                if policy_logprobs is None:
                    logprobs, _ = self._logprobs(self.actor, rows)
                else:
                    logprobs = policy_logprobs[index, :width].to(self.actor.device)
                ref_logprobs, _ = self._logprobs(self.reference, rows)
            if self.critic is None:
                values = torch.zeros_like(ref_logprobs)
            else:
                with torch.enable_grad() if keep_value_graph else torch.no_grad():
                    values = self._values(rows)
            if keep_value_graph:
                held.append((index, values))
                values = values.detach()
            if chunk:
                for whole, t in zip(out, (logprobs, ref_logprobs, values), strict=True):
                    whole[index, :width] = torch.where(mask.bool(), t, 0.0).cpu()
        self._set_mode(train=True)
        if keep_value_graph:
            self._held = _HeldValues(batch.prompt_ids, batch.response_ids, held)
        return PolicyOutputs(*out)

    # --- the PPO update ---------------------------------------------------------

    def train(
        self,
        experience: ExperienceBatch,
        ppo_epochs: int,
        mini_batch_size: int,
        clip_eps: float,
        value_clip: float,
        vf_coef: float,
        entropy_coef: float,
        tis_cap: float = 0.0,
        kl_coef: float = 0.0,
        kl_estimator: KLKind = "k3",
        loss_agg: str = "token_mean",
        max_len: int = 0,
    ) -> PPOTrainStats:
        """`ppo_epochs` passes over this rank's shard in shuffled mini-batches; all ranks call together.

        `mini_batch_size` is this rank's samples per optimizer step; the DeepSpeed
        configs' micro-batch size times gradient accumulation must equal it. `tis_cap` > 0
        weights each token's policy loss by min(exp(old - behaviour log-prob), tis_cap). After
        `logprobs_and_values(keep_value_graph=True)` the critic's step backpropagates
        through those passes (in their micro-batches) and the actor's alone runs here.
        `kl_coef` > 0 adds `kl_coef` x the `kl_estimator` KL to the reference to the policy
        loss (`ppo.kl_in=loss`; 0 when the KL is in the reward). `loss_agg` and `max_len`:
        how token losses make one loss (`rlaif.core.losses.aggregate_tokens`). Without a
        critic only the actor trains.
        """
        n = experience.prompt_ids.shape[0]
        accum = int(self.actor.gradient_accumulation_steps())
        if mini_batch_size != self.micro_batch_size * accum or n % mini_batch_size:
            raise ValueError(
                f"rank {self.rank}: {n} samples must split into mini-batches of {mini_batch_size} "
                f"= micro_batch_size {self.micro_batch_size} x grad_accum {accum}"
            )
        held, self._held = self._held, None
        if held is not None:
            held.check(experience, ppo_epochs, mini_batch_size, self.rank)
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)
        loss = _PolicyLoss(clip_eps, entropy_coef, tis_cap, kl_coef, kl_estimator, loss_agg, max_len)
        sums = _Sums()
        if held is not None:
            # First: each backward frees its kept activations before the actor's passes allocate theirs.
            for index, values in held.chunks:
                self._critic_step(trim_padding(index_batch(experience, index)), values, value_clip, vf_coef, sums)
        for epoch in range(ppo_epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, self.micro_batch_size):
                micro = trim_padding(index_batch(experience, order[start : start + self.micro_batch_size]))
                # Until the first step the actor has the sampling weights: its log-probs are the learner's π_old.
                before_first_step = epoch == 0 and start < mini_batch_size
                self._actor_step(micro, loss, before_first_step, sums)
                if held is None and self.critic is not None:
                    self._critic_step(micro, self._values(micro.rollout()), value_clip, vf_coef, sums)
        self.step += 1
        return sums.reduce(time.perf_counter() - started)

    def _actor_step(self, mb: ExperienceBatch, loss: _PolicyLoss, measure: bool, sums: _Sums) -> None:
        """One forward/backward of the actor; DeepSpeed steps at the accumulation boundary.

        `measure`: the actor still has the sampling weights, so add its gap to the engine's log-probs.
        """
        device = self.actor.device
        mask = mb.response_mask.to(device)
        logprobs, logits = self._logprobs(self.actor, mb.rollout())
        old, behaviour = mb.old_logprobs.to(device), mb.behaviour_logprobs.to(device)
        if measure:
            sums.add_mismatch(logprob_mismatch(logprobs, behaviour, mask))
        tis = truncated_is_weights(old, behaviour, loss.tis_cap) if loss.tis_cap else None
        weights = None if tis is None else tis.weights
        pg_loss, stats = ppo_policy_loss(
            logprobs, old, mb.advantages.to(device), mask, loss.clip_eps, weights, loss.agg, loss.max_len
        )
        if tis is not None:
            sums.add_tis(masked_mean(tis.weights, mask), masked_mean(tis.clipped.float(), mask))
        total = pg_loss
        kl_term = torch.zeros(())
        if loss.kl_coef:
            kl_term = kl_loss(logprobs, mb.ref_logprobs.to(device), mask, loss.kl_estimator, loss.agg, loss.max_len)
            total = total + loss.kl_coef * kl_term
        # The entropy bonus needs the graph only when it is on; it is logged either way.
        with nullcontext() if loss.entropy_coef else torch.no_grad():
            entropy = entropy_from_logits(logits, mask)
        if loss.entropy_coef:
            total = total - loss.entropy_coef * entropy
        boundary = self.actor.is_gradient_accumulation_boundary()
        self.actor.backward(total)
        self.actor.step()
        sums.add_policy(pg_loss, entropy, stats.approx_kl, stats.clip_fraction, kl_term)
        if boundary:
            sums.add_actor_norm(D.grad_norm(self.actor))

    def _critic_step(
        self, mb: ExperienceBatch, values: torch.Tensor, value_clip: float, vf_coef: float, sums: _Sums
    ) -> None:
        """The value loss of `values` (the critic's pass over `mb`, with its graph) backward; steps at the boundary."""
        assert self.critic is not None
        device = self.critic.device
        mask = mb.response_mask.to(device)
        boundary = self.critic.is_gradient_accumulation_boundary()
        v_loss = value_loss(values, mb.values.to(device), mb.returns.to(device), mask, value_clip)
        # With its own optimizer the critic's loss scale is its learning rate's business;
        # vf_coef is kept for parity with shared-trunk PPO (Adam undoes most of it).
        self.critic.backward(vf_coef * v_loss)
        self.critic.step()
        sums.add_value(v_loss)
        if boundary:
            sums.add_critic_norm(D.grad_norm(self.critic))

    def _logprobs(self, model: Any, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs (batch, response_len) of the response tokens and their tempered logits (…, vocab)."""
        device = self.actor.device
        ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1).to(device)
        mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1).to(device)
        width = batch.response_ids.shape[1]
        # The logits that predict the response: the last width+1 positions but the final one.
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=False,
            logits_to_keep=width + 1,
        )
        logits = out.logits[:, :-1].float() / self.temperature
        targets = batch.response_ids.to(device).unsqueeze(-1)
        logprobs = logits.gather(-1, targets).squeeze(-1) - logits.logsumexp(dim=-1)
        return logprobs, logits

    def _values(self, batch: RolloutBatch) -> torch.Tensor:
        """Critic values (batch, response_len) of the states before each response token."""
        assert self.critic is not None
        device = self.critic.device
        ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1).to(device)
        mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1).to(device)
        width, prompt_len = batch.response_ids.shape[1], batch.prompt_ids.shape[1]
        values: torch.Tensor = self.critic(ids, mask, position_ids_from_mask(mask))
        return values[:, prompt_len - 1 : prompt_len - 1 + width]

    def _set_mode(self, train: bool) -> None:
        for engine in (self.actor, self.critic):
            if engine is not None:
                engine.train(train)

    # --- weight sync --------------------------------------------------------------

    def sync_address(self) -> tuple[str, int]:
        """Rank 0: an address and free port on its node for the broadcast group's store."""
        return self.master_addr, D.find_free_port()

    def join_sync_group(
        self, master_addr: str, master_port: int, world_size: int, backend: str, timeout_s: int = TIMEOUT_S
    ) -> None:
        """Rank 0: join the broadcast group as its rank 0 (blocks until every engine joins too).

        A group formed earlier is dropped first: the driver re-forms the group when a rollout
        actor was restarted, and the old one still links to the dead process.
        """
        if self.rank != 0:
            raise RuntimeError(f"only learner rank 0 sends weights; this is rank {self.rank}")
        self.sync_group = None
        self.sync_group = SyncGroup(master_addr, master_port, 0, world_size, backend, timeout_s)

    def tensor_metas(self) -> list[TensorMeta]:
        """Name, full (unsharded) shape and dtype of every policy parameter, in sending order."""
        return [
            TensorMeta(name, tuple(getattr(p, "ds_shape", p.shape)), str(p.dtype).removeprefix("torch."))
            for name, p in self._sync_params
        ]

    def send_weights(self, bucket_bytes: int) -> SyncStats:
        """Broadcast the policy, bucket by bucket; all ranks call (ZeRO-3 gathers are collective).

        Returns rank 0's `SyncStats`; other ranks return zeros.
        """
        if self.rank == 0 and self.sync_group is None:
            raise RuntimeError("send_weights called before join_sync_group")
        metas = self.tensor_metas()
        started, sent, buckets = time.perf_counter(), 0, 0
        for k, bucket in enumerate(plan_buckets(metas, bucket_bytes)):
            params = [self._sync_params[i][1] for i in bucket]
            with self._gathered(params):
                if self.sync_group is not None:
                    tensors, bucket_metas = [p.data for p in params], [metas[i] for i in bucket]
                    stats = send_state(self.sync_group, tensors, bucket_metas, bucket_bytes, first=k == 0)
                    sent, buckets = sent + stats.bytes, buckets + stats.buckets
        return SyncStats(sent, time.perf_counter() - started if self.rank == 0 else 0.0, buckets)

    @contextmanager
    def _gathered(self, params: list[torch.nn.Parameter]) -> Iterator[None]:
        """Whole tensors for the duration: gathered from their shards under ZeRO-3, as they are otherwise."""
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                yield
        else:
            yield

    # --- saving and resuming ----------------------------------------------------------

    def save(self, path: str) -> None:
        """Write the policy and tokenizer as a Hugging Face folder (all ranks call; rank 0 writes)."""
        D.save_hf_folder(self.actor.module, self.tokenizer, path, self.zero_stage, self.rank)

    def save_checkpoint(self, directory: str) -> None:
        """Actor and critic training state under `directory`/{actor,critic} (all ranks call; no critic/ without one)."""
        D.save_engine_checkpoint(self.actor, Path(directory) / "actor", self.step)
        if self.critic is not None:
            D.save_engine_checkpoint(self.critic, Path(directory) / "critic", self.step)

    def load_checkpoint(self, directory: str) -> int:
        """Resume actor and critic from `save_checkpoint`; return the number of updates made so far."""
        self._held = None
        self.step = D.load_engine_checkpoint(self.actor, Path(directory) / "actor")
        if self.critic is not None:
            D.load_engine_checkpoint(self.critic, Path(directory) / "critic")
        return self.step


class _PolicyLoss(NamedTuple):
    """How one micro-batch's actor loss is made (see `PPOTrainer.train`)."""

    clip_eps: float
    entropy_coef: float
    tis_cap: float
    kl_coef: float
    kl_estimator: KLKind
    agg: str
    max_len: int


class _HeldValues(NamedTuple):
    """Critic passes kept by `logprobs_and_values` for the next `train`: row indices and values with graphs."""

    prompt_ids: torch.Tensor
    response_ids: torch.Tensor
    chunks: list[tuple[torch.Tensor, torch.Tensor]]

    def check(self, experience: ExperienceBatch, ppo_epochs: int, mini_batch_size: int, rank: int) -> None:
        """The update must be one step over the very rows the passes saw, or the kept values would be stale."""
        same = torch.equal(experience.prompt_ids, self.prompt_ids) and torch.equal(
            experience.response_ids, self.response_ids
        )
        if not same or ppo_epochs != 1 or experience.prompt_ids.shape[0] != mini_batch_size:
            raise ValueError(
                f"rank {rank}: the critic's kept passes (ppo.value_forward=once) need train() to be one epoch "
                f"(got {ppo_epochs}) of one mini-batch (got {mini_batch_size} of {experience.prompt_ids.shape[0]} "
                f"rows) over the rows logprobs_and_values saw (same rows: {same})"
            )


class _Sums:
    """Running sums of this rank's per-micro-batch metrics, reduced over ranks at the end."""

    def __init__(self) -> None:
        self.policy = [0.0] * 5  # policy loss, entropy, approx KL, clip fraction, KL loss term
        self.value = 0.0
        self.counts = [0, 0]  # actor and critic micro-batches
        self.norms = [0.0, 0.0]
        self.steps = [0, 0]  # actor and critic optimizer steps
        self.tis = [0.0, 0.0, 0.0]  # weight mean, clip fraction, micro-batches (0: TIS off)
        self.mismatch = [0.0, 0.0, 0.0]  # |learner - engine| sum, k3 sum, tokens

    def add_policy(self, *metrics: torch.Tensor) -> None:
        for i, m in enumerate(metrics):
            self.policy[i] += float(m.detach())
        self.counts[0] += 1

    def add_tis(self, weight_mean: torch.Tensor, clip_fraction: torch.Tensor) -> None:
        self.tis = [self.tis[0] + float(weight_mean), self.tis[1] + float(clip_fraction), self.tis[2] + 1]

    def add_mismatch(self, m: LogprobMismatch) -> None:
        self.mismatch = [a + b for a, b in zip(self.mismatch, m, strict=True)]

    def add_value(self, loss: torch.Tensor) -> None:
        self.value += float(loss.detach())
        self.counts[1] += 1

    def add_actor_norm(self, norm: float) -> None:
        self.norms[0] += norm
        self.steps[0] += 1

    def add_critic_norm(self, norm: float) -> None:
        self.norms[1] += norm
        self.steps[1] += 1

    def reduce(self, seconds: float) -> PPOTrainStats:
        totals = D.all_reduce_sums([*self.policy, self.value, *self.tis, *self.mismatch, *map(float, self.counts)])
        actor_micro, critic_micro = (max(c, 1.0) for c in totals[-2:])
        policy_loss, entropy, approx_kl, clip_fraction, kl_term = (v / actor_micro for v in totals[:5])
        tis_sum, tis_clipped, tis_micro = totals[6:9]
        # Grad norms are global already (identical on every rank): average over this rank's steps.
        return PPOTrainStats(
            policy_loss=policy_loss,
            kl_loss=kl_term,
            value_loss=totals[5] / critic_micro,
            entropy=entropy,
            approx_kl=approx_kl,
            clip_fraction=clip_fraction,
            actor_grad_norm=self.norms[0] / max(self.steps[0], 1),
            critic_grad_norm=self.norms[1] / max(self.steps[1], 1),
            optimizer_steps=self.steps[0],
            # Off, every weight is 1 and none is clipped.
            tis_weight_mean=tis_sum / tis_micro if tis_micro else 1.0,
            tis_clip_fraction=tis_clipped / tis_micro if tis_micro else 0.0,
            mismatch=LogprobMismatch(*totals[9:12]),
            seconds=seconds,
        )
