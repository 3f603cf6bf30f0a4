"""Weight sync: seconds per push against bytes, learner -> 1 and -> 2 rollout engines, against the floor.

- ``rlaif``: `bench.weight_sync.measure`: one real `PPOTrainer` rank (ZeRO-2 on CPU) pushes
  the policy through `PolicySync` (gather, gloo broadcast in buckets, vLLM's in-place reload
  with CPU re-packing) to a pool of `RolloutWorker` actors; a few model sizes give a few byte counts.
- ``floor``: an in-process ``copy_`` of the same tensors into preallocated ones (the
  memory-bandwidth floor of moving those bytes once), measured for each size, and on CUDA
  for synthetic sizes too.
"""

from __future__ import annotations

import os
from typing import Any

from bench.common import Settings, Skipped, dtype_for, log, median, require, resolve_bench_model, timed


def copy_floor(tensors: list[Any], repeats: int, device: str) -> float:
    import torch

    dst = [torch.empty_like(t) for t in tensors]

    def once() -> None:
        for d, t in zip(dst, tensors, strict=True):
            d.copy_(t)
        if device == "cuda":
            torch.cuda.synchronize()

    once()
    return median([timed(once)[0] for _ in range(max(3, repeats))])


def model_tensors(model_name: str, device: str) -> tuple[str, list[Any]]:
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_bench_model(model_name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype_for(device))).to(device)
    # What the learner sends: every named parameter once (a tied head shares the embedding).
    return str(path), [p.detach() for p in model.parameters()]


def run(s: Settings) -> dict[str, Any]:
    require("torch", "transformers")
    import torch

    if s.device == "cuda" and not torch.cuda.is_available():
        raise Skipped("CUDA is not available")
    if s.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    models = ["tiny"] if s.quick else ["tiny", s.model]
    floor, paths = [], {}
    for name in models:
        path, tensors = model_tensors(name, s.device)
        paths[name] = path
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        sec = copy_floor(tensors, s.repeats, s.device)
        floor.append({"source": name, "bytes": nbytes, "seconds_median": sec, "gb_per_s": nbytes / 1e9 / sec})
        log(f"sync floor {name}: {nbytes / 1e6:.0f} MB in {sec * 1e3:.1f} ms")
        del tensors
    if s.device == "cuda":
        for mb in (64, 256, 1024):
            t = [torch.empty(mb << 18, dtype=torch.float32, device="cuda")]
            sec = copy_floor(t, s.repeats, s.device)
            floor.append(
                {
                    "source": f"synthetic {mb} MB",
                    "bytes": mb << 20,
                    "seconds_median": sec,
                    "gb_per_s": (mb << 20) / 1e9 / sec,
                }
            )
    result: dict[str, Any] = {"floor": floor}
    try:
        require("ray", "vllm", "deepspeed")
        if s.device != "cpu":
            raise Skipped("the learner -> engine path is measured on CPU here (NCCL path: run on a Ray GPU cluster)")
    except Skipped as exc:
        result["rlaif"] = {"skipped": str(exc)}
        return result
    import ray

    from bench.weight_sync import measure
    from rlaif.actors.cluster import start_local

    engines = [1] if s.quick else [1, 2]
    rows = []
    start_local(num_cpus=max(engines) + 1, include_dashboard=False, log_to_driver=False)
    try:
        for name in models:
            for row in measure(paths[name], engines, [64], s.repeats):
                row["source"] = name
                rows.append(row)
                log(f"sync {name} -> {row['engines']} engine(s): {row['seconds_median']:.2f} s")
    finally:
        ray.shutdown()
    result["rlaif"] = rows
    return result
