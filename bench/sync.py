"""Weight sync: seconds per push against bytes, learner -> 1 and -> 2 rollout engines, against the floor.

- ``rlaif``: `bench.weight_sync.measure`: one real `PPOTrainer` rank (ZeRO-2 on CPU) pushes
  the policy through `PolicySync` (gather, gloo broadcast in buckets; each engine loads every
  bucket straight into its own tensors and re-packs them for its CPU kernels, or falls back
  to vLLM's reload: the row's ``load_paths``) to a pool of `RolloutWorker` actors; a few
  model sizes give a few byte counts.
- ``floor``: an in-process ``copy_`` of the same tensors into preallocated ones (the
  memory-bandwidth floor of moving those bytes once), measured for each size with all
  cores (``kind: copy``, the floor each sync row is compared with) and with one thread
  (``copy_1thread``: an engine actor runs on one core), and on CUDA for synthetic sizes too.
  On CPU with vLLM installed, also ``pack_1thread``: vLLM-CPU's re-packing of the model's
  linear weights (fused as the engine holds them, output head included) for its GEMM
  kernels, one thread, no bytes moved: the part of an engine's load that no transport
  removes (docs/design.md §5).

Each sync row carries its bytes per second per engine and ``x_copy_floor``, its time over
the all-core copy floor of the same bytes.
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


# Learner tensors that vLLM's Llama stacks into one weight (its `hf_to_vllm_mapper`).
_STACKED = (("q_proj", "qkv"), ("k_proj", "qkv"), ("v_proj", "qkv"), ("gate_proj", "gate_up"), ("up_proj", "gate_up"))


def pack_floor(named: list[tuple[str, Any]], repeats: int) -> float:
    """Seconds for vLLM-CPU's dispatch to repack every linear weight of the model, as the engine holds them."""
    import torch
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    weights = engine_linear_weights(named)

    def once() -> None:
        for w in weights:
            layer = torch.nn.Module()
            layer.weight = torch.nn.Parameter(w, requires_grad=False)
            dispatch_cpu_unquantized_gemm(layer, remove_weight=True)

    once()
    return median([timed(once)[0] for _ in range(max(3, repeats))])


def engine_linear_weights(named: list[tuple[str, Any]]) -> list[Any]:
    """The 2-D weights a vLLM Llama packs on a sync: q/k/v and gate/up stacked, the rest as they are.

    The input embedding is left out (only the output head's GEMM runs); a tied head packs the
    embedding's weight.
    """
    import torch

    fused: dict[str, list[Any]] = {}
    for name, t in named:
        if t.ndim != 2 or "embed_tokens" in name:
            continue
        key = name
        for part, group in _STACKED:
            if f".{part}." in name:
                key = name.replace(part, group)
        fused.setdefault(key, []).append(t)
    weights = [torch.cat(parts) if len(parts) > 1 else parts[0] for parts in fused.values()]
    if not any(name.startswith("lm_head") for name, _ in named):  # tied: the head packs the embedding
        weights += [t for name, t in named if "embed_tokens" in name]
    return weights


def model_tensors(model_name: str, device: str) -> tuple[str, list[tuple[str, Any]]]:
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_bench_model(model_name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype_for(device))).to(device)
    # What the learner sends: every named parameter once (a tied head shares the embedding).
    return str(path), [(n, p.detach()) for n, p in model.named_parameters()]


def floor_row(source: str, kind: str, nbytes: int, seconds: float) -> dict[str, Any]:
    return {
        "source": source,
        "kind": kind,
        "bytes": nbytes,
        "seconds_median": seconds,
        "gb_per_s": nbytes / 1e9 / seconds,
    }


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
        path, named = model_tensors(name, s.device)
        paths[name] = path
        tensors = [t for _, t in named]
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        floor.append(floor_row(name, "copy", nbytes, copy_floor(tensors, s.repeats, s.device)))
        log(f"sync floor {name}: {nbytes / 1e6:.0f} MB in {floor[-1]['seconds_median'] * 1e3:.1f} ms")
        if s.device == "cpu":
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                floor.append(floor_row(name, "copy_1thread", nbytes, copy_floor(tensors, s.repeats, s.device)))
                try:
                    require("vllm")
                    packed = engine_linear_weights(named)
                    packed_bytes = sum(t.numel() * t.element_size() for t in packed)
                    floor.append(floor_row(name, "pack_1thread", packed_bytes, pack_floor(named, s.repeats)))
                except Skipped as exc:
                    log(f"sync pack floor skipped: {exc}")
            finally:
                torch.set_num_threads(threads)
        del tensors, named
    if s.device == "cuda":
        for mb in (64, 256, 1024):
            t = [torch.empty(mb << 18, dtype=torch.float32, device="cuda")]
            floor.append(floor_row(f"synthetic {mb} MB", "copy", mb << 20, copy_floor(t, s.repeats, s.device)))
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
            copy = next(f for f in floor if f["source"] == name and f["kind"] == "copy")
            for row in measure(paths[name], engines, [64], s.repeats):
                row["source"] = name
                row["x_copy_floor"] = row["seconds_median"] / copy["seconds_median"]
                rows.append(row)
                log(
                    f"sync {name} -> {row['engines']} engine(s), {'/'.join(row['load_paths'])}: "
                    f"{row['seconds_median']:.2f} s, {row['gb_per_s_per_engine']:.2f} GB/s per engine "
                    f"({row['x_copy_floor']:.1f}x the copy floor, {copy['gb_per_s']:.1f} GB/s)"
                )
    finally:
        ray.shutdown()
    result["rlaif"] = rows
    return result
