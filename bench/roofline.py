"""The machine's own limits, measured in the run: peak matmul FLOP/s and memory bandwidth.

- matmul: ``torch.mm`` of two large square matrices (fp32 on CPU with as many threads as
  cores; bf16 on CUDA), 2·n³ FLOPs per call, best of several calls.
- bandwidth: ``dst.copy_(src)`` of a large tensor, counted as bytes read plus bytes written.

Roofline of decoding (the model written into results.md): one decoding step at batch b
reads every weight once (W bytes) and does b·F FLOPs, F ≈ 2·params per token (every
weight, the tied output head included, takes part in one multiply-add per token; attention
over a short context adds < 2% at 64-128 tokens). Its time is at least
max(b·F / peak_flops, W / bandwidth), so the tokens/s ceiling is
b / max(b·F / peak_flops, W / bandwidth): bandwidth bound at small b, compute bound at large b.

A generation call also prefills its prompts first: b prompts of P tokens cost
max(b·P·F / peak_flops, W / bandwidth), and the call's N decoding steps N times the step above.
The ceiling reported for a call's generated tokens/s (`generation_ceiling`) is b·N over the
sum: at batch 64 with 44-token prompts and 48 new tokens, the prefill is nearly half the work.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.common import Settings, log


def run(s: Settings) -> dict[str, Any]:
    import torch

    cuda = s.device == "cuda"
    if cuda and not torch.cuda.is_available():
        from bench.common import Skipped

        raise Skipped("CUDA is not available")
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device(s.device)
    dtype = torch.bfloat16 if cuda else torch.float32
    n = 8192 if cuda else (1024 if s.quick else 2048)
    reps = 20 if cuda else 5

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(s.repeats):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        sync()
        best = min(best, (time.perf_counter() - t) / reps)
    flops = 2 * n**3 / best
    del a, b
    size = (1 << 30) if cuda else (64 << 20 if s.quick else 256 << 20)  # bytes per tensor
    src = torch.empty(size // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync()
    best_copy = float("inf")
    for _ in range(max(3, s.repeats)):
        t = time.perf_counter()
        for _ in range(5):
            dst.copy_(src)
        sync()
        best_copy = min(best_copy, (time.perf_counter() - t) / 5)
    bandwidth = 2 * size / best_copy
    log(f"roofline: {flops / 1e9:.0f} GFLOP/s ({dtype}), copy {bandwidth / 1e9:.1f} GB/s")
    return {
        "matmul": {
            "n": n,
            "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            "flops_per_s": flops,
        },
        "bandwidth": {"bytes_per_copy": size, "bytes_per_s": bandwidth, "counted": "read + write"},
    }


def step_seconds(tokens: float, params: int, weight_bytes: int, flops_per_s: float, bytes_per_s: float) -> float:
    """Least time of one forward pass over `tokens` tokens: every weight read once, 2·params FLOPs a token."""
    return max(tokens * 2.0 * params / flops_per_s, weight_bytes / bytes_per_s)


def decode_ceiling(batch: int, params: int, weight_bytes: int, flops_per_s: float, bytes_per_s: float) -> float:
    """Tokens/s ceiling of one decoding step at batch `batch` (see the module doc)."""
    return batch / step_seconds(batch, params, weight_bytes, flops_per_s, bytes_per_s)


def generation_ceiling(
    batch: int,
    prompt_tokens: float,
    new_tokens: int,
    params: int,
    weight_bytes: int,
    flops_per_s: float,
    bytes_per_s: float,
) -> float:
    """Generated tokens/s ceiling of a call that prefills `batch` prompts, then decodes `new_tokens` steps."""
    machine = (params, weight_bytes, flops_per_s, bytes_per_s)
    prefill = step_seconds(batch * prompt_tokens, *machine)
    return batch * new_tokens / (prefill + new_tokens * step_seconds(batch, *machine))
