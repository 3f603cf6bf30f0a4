"""The one inference-engine interface shared by rollout, critic and judge roles.

Two backends implement `Engine`: vLLM (`rlaif.engines.vllm_engine`) and Hugging Face
transformers (`rlaif.engines.hf_engine`). Both receive the same token ids, because
prompts are rendered and tokenised here, once, by `PromptRenderer`; greedy outputs
and option scores of the two agree on the same model (tests/integration).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

if TYPE_CHECKING:
    import torch


class Message(NamedTuple):
    """One chat turn."""

    role: str
    content: str


Prompt = str | Sequence[Message]
"""A raw text prompt, or chat messages rendered with the model's chat template."""


class PromptTooLongError(ValueError):
    """A prompt does not fit the engine's context together with the tokens asked for."""


@dataclass(frozen=True)
class EngineSpec:
    """How to build an engine; plain values so that it crosses Ray boundaries."""

    model_path: str
    backend: Literal["vllm", "transformers"] = "vllm"
    # "float32" on CPU (no native bf16 there, docs/design.md §7); "bfloat16" on GPUs.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_model_len: int = 2048
    seed: int = 0
    # vLLM only: eager mode skips minutes of graph compilation at start-up on CPU.
    enforce_eager: bool = True
    enable_prefix_caching: bool = True
    # vLLM on CPU: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE); on GPU the memory fraction below.
    kv_cache_gib: float = 1.0
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1
    max_num_seqs: int = 256
    trust_remote_code: bool = False
    device: Literal["cpu", "cuda"] = "cpu"
    # vLLM on GPU only: allow `sleep()` / `wake_up()`, for rollout engines that share GPUs with a learner.
    enable_sleep_mode: bool = False

    def __post_init__(self) -> None:
        if self.backend not in ("vllm", "transformers"):
            raise ValueError(f"engine.backend: expected 'vllm' or 'transformers', got {self.backend!r}")
        if self.max_model_len <= 0:
            raise ValueError(f"engine.max_model_len must be positive, got {self.max_model_len}")


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; temperature 0 means greedy."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Keep sampling past the end-of-sequence token up to max_new_tokens (fixed-length benchmarks).
    ignore_eos: bool = False
    # Return each sampled token's log-probability (Completion.logprobs); off, Completion.logprobs is ().
    logprobs: bool = True

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens must be >= 1, got n={self.n}, max_new_tokens={self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")


@dataclass(frozen=True)
class Completion:
    """One sampled continuation.

    `logprobs[i]` is the log-probability of `token_ids[i]` under the sampling
    distribution (after temperature and top-p), the same quantity on both backends.
    `finish_reason` is "stop" where the model ended the text itself (an end-of-sequence
    token or a stop string) and "length" where it ran into `max_new_tokens`.
    """

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str

    @property
    def finished(self) -> bool:
        """Whether the model ended the response itself; False for one cut off at the token limit."""
        return self.finish_reason == "stop"


@dataclass(frozen=True)
class Generation:
    """All samples for one prompt, and the policy version whose weights made them."""

    prompt_token_ids: tuple[int, ...]
    completions: tuple[Completion, ...]
    policy_version: int


@dataclass(frozen=True)
class OptionRequest:
    """A prompt and k candidate continuations to score against each other."""

    prompt: Prompt
    options: tuple[str, ...]


@dataclass(frozen=True)
class OptionScores:
    """Log-probabilities of each option, normalised over the options (they sum to 1 in prob space)."""

    logprobs: tuple[float, ...]

    @property
    def probs(self) -> tuple[float, ...]:
        return tuple(math.exp(lp) for lp in self.logprobs)


@dataclass
class ThroughputCounter:
    """Running totals of tokens and busy seconds inside the engine's own calls."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    _started: float = field(default=0.0, repr=False)

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self, prompt_tokens: int, generated_tokens: int) -> None:
        self.seconds += time.perf_counter() - self._started
        self.prompt_tokens += prompt_tokens
        self.generated_tokens += generated_tokens

    def snapshot(self) -> ThroughputStats:
        secs = max(self.seconds, 1e-9)
        return ThroughputStats(
            prompt_tokens=self.prompt_tokens,
            generated_tokens=self.generated_tokens,
            seconds=self.seconds,
            prompt_tokens_per_s=self.prompt_tokens / secs,
            generated_tokens_per_s=self.generated_tokens / secs,
        )


class ThroughputStats(NamedTuple):
    prompt_tokens: int
    generated_tokens: int
    seconds: float
    prompt_tokens_per_s: float
    generated_tokens_per_s: float


class WeightLoad(NamedTuple):
    """How an engine took new weights in: ``path`` names the route (docs/design.md §5), ``seconds`` its time.

    vLLM: "direct" (copied and repacked in place) or "reload" (vLLM's own in-place reload);
    transformers: "copy".
    """

    path: str
    seconds: float


class Engine(Protocol):
    """What rollout, critic and judge roles need from an inference backend."""

    policy_version: int

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]: ...

    def score_options(self, requests: Sequence[OptionRequest]) -> list[OptionScores]: ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> WeightLoad:
        """Load the named tensors (the learner's names), consuming them in order, then serve `version`."""
        ...

    def stats(self) -> ThroughputStats: ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...

    def shutdown(self) -> None: ...


class PromptRenderer:
    """Turns prompts into token ids the same way for every backend."""

    def __init__(self, tokenizer: object, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        messages = [{"role": m.role, "content": m.content} for m in prompt]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)  # type: ignore[attr-defined]
        return str(text)

    def encode(self, prompt: Prompt, room: int = 0) -> list[int]:
        """Token ids for `prompt`; raise `PromptTooLongError` unless `room` more tokens fit."""
        ids: list[int] = list(self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"])  # type: ignore[operator]
        if len(ids) + room > self.max_model_len:
            head = self.render(prompt)[:60].replace("\n", " ")
            raise PromptTooLongError(
                f"prompt of {len(ids)} tokens plus {room} more exceeds the context of {self.max_model_len} "
                f"tokens: {head!r}…"
            )
        return ids

    def encode_options(self, options: Sequence[str]) -> list[list[int]]:
        """Option continuations as tokens appended to the prompt's tokens (no re-merging at the seam)."""
        encoded = [list(self.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in options]  # type: ignore[operator]
        for option, ids in zip(options, encoded, strict=True):
            if not ids:
                raise ValueError(f"option {option!r} encodes to no tokens")
        return encoded


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` before the earliest stop string; report whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def log_normalise(logprobs: Sequence[float]) -> tuple[float, ...]:
    """Log-softmax over a handful of option log-probs."""
    top = max(logprobs)
    log_z = top + math.log(sum(math.exp(lp - top) for lp in logprobs))
    return tuple(lp - log_z for lp in logprobs)
