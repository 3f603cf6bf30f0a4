"""Generation throughput: rlaif's rollout path against bare vLLM and transformers `generate`.

Every path gets the same prompts (the first `batch` red-team prompts rendered with the
model's chat template, or random token ids when the model folder has no tokenizer), the
same sampling (temperature 1, top-p 1, no top-k) and exactly `max_new_tokens` new tokens
per prompt (end-of-sequence ignored), so tokens/s compare like for like:

- ``transformers``: ``model.generate`` on a left-padded batch (the baseline TRL's PPO uses);
- ``vllm_bare``: ``LLM.generate`` on token ids with plain ``SamplingParams``, in-process;
- ``rlaif_engine``: `rlaif.engines.vllm_engine.VLLMEngine.generate` on chat messages (rendering,
  tokenising and result conversion included) - on the SAME `LLM` object as ``vllm_bare``,
  the two interleaved batch by batch, so load on a shared machine hits both alike. Sharing
  the engine, it measures only the wrapper's overhead, and is reported as that, not as a
  comparison with vLLM;
- ``rlaif_rollout_actor``: the same call through a Ray `RolloutWorker` actor (`ActorPool`,
  ``engine_env``), as the rl_cai stage samples, with the actor given every core; on CPU at
  the full size, where the actor and its Ray cluster are up for the whole in-process
  measurement and its calls are interleaved with the others too.

Every timed call starts with a cold prefix cache (the in-process paths reset it before each
call; the actor's engine has it off), so no path gets another's prefill for free.

Reported per batch size: median tokens/s over repeats (three times as many for batches of 1
and 8, whose calls are short), the rollout actor / bare vLLM ratio, the engine wrapper's
overhead, and the fraction of the roofline ceiling reached (`bench.roofline.generation_ceiling`,
prefill included). The actor / bare vLLM and engine / bare vLLM ratios (the overhead is the
latter's inverse less one) are medians of the per-repeat ratios of interleaved calls, which
cancels the machine's drift between repeats; the others divide medians.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import Settings, Skipped, dtype_for, log, median, require, resolve_bench_model, timed


def _prompts(model_dir: Path, count: int) -> tuple[list[Any] | None, list[list[int]]]:
    """(chat prompts or None, their token ids)."""
    if not (model_dir / "tokenizer.json").is_file() and not (model_dir / "tokenizer_config.json").is_file():
        from bench.common import random_prompts

        return None, random_prompts(count, 32, 49152)
    from transformers import AutoTokenizer

    from rlaif.core.prompts import load_prompts
    from rlaif.engines.base import Message, PromptRenderer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    renderer = PromptRenderer(tokenizer, 2048)
    records = load_prompts("builtin:red_team")
    chats = [[Message("user", records[i % len(records)].prompt)] for i in range(count)]
    return chats, [renderer.encode(c, room=256) for c in chats]


def run_transformers(s: Settings, model_dir: Path, ids: list[list[int]]) -> dict[int, float]:
    import torch
    from transformers import AutoModelForCausalLM

    if s.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    dtype = getattr(torch, dtype_for(s.device))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(s.device).eval()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    rates: dict[int, list[float]] = {b: [] for b in s.batch_sizes}

    def batch_of(b: int) -> tuple[Any, Any]:
        rows = ids[:b]
        width = max(len(r) for r in rows)
        input_ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        return input_ids.to(s.device), mask.to(s.device)

    kwargs = dict(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        pad_token_id=pad,
        max_new_tokens=s.max_new_tokens,
        min_new_tokens=s.max_new_tokens,
    )
    with torch.no_grad():
        warm_ids, warm_mask = batch_of(1)
        model.generate(
            input_ids=warm_ids, attention_mask=warm_mask, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2}
        )
        for _ in range(s.repeats):
            for b in s.batch_sizes:
                input_ids, mask = batch_of(b)
                if s.device == "cuda":
                    torch.cuda.synchronize()
                seconds, out = timed(partial(model.generate, input_ids=input_ids, attention_mask=mask, **kwargs))
                if s.device == "cuda":
                    torch.cuda.synchronize()
                new = (out.shape[1] - input_ids.shape[1]) * b
                rates[b].append(new / seconds)
                log(f"generation transformers b={b}: {new / seconds:.1f} tok/s")
    del model
    return {b: median(v) for b, v in rates.items()}


def run_vllm_in_process(
    s: Settings, model_dir: Path, chats: list[Any], ids: list[list[int]], pool: Any = None
) -> tuple[dict[str, dict[int, float]], dict[str, Any]]:
    """Medians of tokens/s per path ("ours", "bare", "bare1", and "actor" when `pool` is given)."""
    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt

    from rlaif.engines.base import EngineSpec, SamplingParams
    from rlaif.engines.vllm_engine import VLLMEngine

    spec = EngineSpec(
        model_path=str(model_dir),
        dtype=dtype_for(s.device),
        device=s.device,  # type: ignore[arg-type]
        max_model_len=512,
        kv_cache_gib=2,
    )
    started, engine = timed(lambda: VLLMEngine(spec))
    ours_params = SamplingParams(temperature=1.0, max_new_tokens=s.max_new_tokens, ignore_eos=True)
    bare_params = VSamplingParams(temperature=1.0, max_tokens=s.max_new_tokens, ignore_eos=True)
    import torch

    threads = torch.get_num_threads()
    series: dict[str, dict[int, list[float]]] = {
        k: {b: [] for b in s.batch_sizes} for k in ("ours", "bare", "bare1", "actor")
    }
    # bare1: bare vLLM on ONE torch thread, what vLLM falls back to in-process when OMP_NUM_THREADS is unset
    # (and what a Ray actor on < 2 CPUs got); it tells whether the extra threads pay on this machine.
    # vLLM replaces torch.set_num_threads with a no-op after binding; torch._C's setter still works.
    with_bare1 = s.device == "cpu" and threads > 1
    # A batch-1 or batch-8 call lasts 2-5 s here, short enough that the machine's own drift
    # (+-15% call to call on this VM) decides a median of three: small batches get three
    # times the repeats, which costs about a minute and a half at the default size.
    reps = {b: s.repeats * (3 if b <= 8 and not s.quick else 1) for b in s.batch_sizes}
    for rep in range(max(reps.values())):
        for b in [b for b in s.batch_sizes if rep < reps[b]]:
            # bare1 is context, not a comparison: measured once per batch size up to 8, to save time.
            kinds = ["ours", "bare"] + (["actor"] if pool else [])
            kinds += ["bare1"] if with_bare1 and rep == 0 and b <= 8 else []
            order = kinds if rep % 2 == 0 else kinds[::-1]  # alternate who goes first
            # An untimed 2-token call first, in each process: the first call at a batch size (batch 8
            # ran up to 20% slow), and again after the smaller batches (the allocator's blocks grow
            # back), is slower, a cost that fell on whoever went first (batch 64: 12-19%).
            engine.generate(chats[:b], SamplingParams(max_new_tokens=2))
            if pool:
                pool.map_shards("generate", chats[:b], SamplingParams(max_new_tokens=2))
            for who in order:
                # Every call starts from an empty prefix cache: else whoever runs second gets the
                # same prompts' prefill for free (about a quarter of the work at batch 64).
                engine.llm.reset_prefix_cache()
                if who in ("ours", "actor"):
                    call = partial(pool.map_shards, "generate") if who == "actor" else engine.generate
                    sec, gens = timed(lambda b=b, call=call: call(chats[:b], ours_params))
                    n = sum(len(c.token_ids) for g in gens for c in g.completions)
                else:
                    prompts = [TokensPrompt(prompt_token_ids=x) for x in ids[:b]]
                    torch._C.set_num_threads(1 if who == "bare1" else threads)
                    sec, outs = timed(lambda p=prompts: engine.llm.generate(p, bare_params, use_tqdm=False))
                    torch._C.set_num_threads(threads)
                    n = sum(len(o.outputs[0].token_ids) for o in outs)
                series[who][b].append(n / sec)
            rates = ", ".join(f"{k} {series[k][b][-1]:.1f}" for k in kinds)
            log(f"generation b={b}: {rates} tok/s")
    engine.shutdown()
    meta = {
        "engine_start_s": started,
        "prefix_cache": "reset before every timed call",
        "torch_threads": threads,
        "threads_env": {
            k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_KVCACHE_SPACE")
        },
    }
    bare = series["bare"]
    # Each repeat's calls ran back to back, so their ratios cancel the drift between repeats.
    for who, key in (("ours", "rlaif_engine_over_bare_paired"), ("actor", "rlaif_actor_over_bare_paired")):
        if series[who][s.batch_sizes[0]]:
            meta[key] = {b: median([o / x for o, x in zip(v, bare[b], strict=True)]) for b, v in series[who].items()}
    kept = [k for k in series if series[k][s.batch_sizes[0]]]
    return {k: {b: median(v) for b, v in series[k].items() if v} for k in kept}, meta


@contextlib.contextmanager
def rollout_pool(model_dir: Path) -> Iterator[Any]:
    """One Ray `RolloutWorker` actor given every core, as the rl_cai stage samples (`engine_env`)."""
    import ray

    from rlaif.actors.cluster import RoleGroupSpec, start_local
    from rlaif.actors.pool import ActorPool, engine_env
    from rlaif.actors.rollout import RolloutWorker
    from rlaif.engines.base import EngineSpec

    cores = os.cpu_count() or 1
    start_local(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    try:
        # No prefix cache: repeats send the same prompts, and the in-process paths reset theirs per call.
        spec = EngineSpec(model_path=str(model_dir), max_model_len=512, kv_cache_gib=2, enable_prefix_caching=False)
        pool = ActorPool(RolloutWorker, RoleGroupSpec("rollout", 1, cores, 0), (spec,), engine_env(cores))
        yield pool
        pool.shutdown()
    finally:
        ray.shutdown()


def model_size(model_dir: Path) -> tuple[int, int]:
    """(parameters, bytes of weights at the benchmark's dtype), tied weights counted once."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    return params, params


def run(s: Settings) -> dict[str, Any]:
    require("torch", "transformers")
    import torch

    if s.device == "cuda" and not torch.cuda.is_available():
        raise Skipped("CUDA is not available")
    model_dir = resolve_bench_model(s.model)
    chats, ids = _prompts(model_dir, max(s.batch_sizes))
    params, _ = model_size(model_dir)
    bytes_per = 2 if s.device == "cuda" else 4
    result: dict[str, Any] = {
        "model": s.model,
        "params": params,
        "weight_bytes": params * bytes_per,
        "max_new_tokens": s.max_new_tokens,
        "prompt_tokens_mean": sum(len(x) for x in ids) / len(ids),
        "batch_sizes": s.batch_sizes,
        "tokens_per_s": {},
    }
    rates = result["tokens_per_s"]
    rates["transformers"] = run_transformers(s, model_dir, ids)
    vllm_missing = None
    try:
        require("vllm")
        if chats is None:
            raise Skipped("the model folder has no tokenizer")
    except Skipped as exc:
        vllm_missing = str(exc)
    if vllm_missing:
        result["skipped_paths"] = {
            "vllm_bare": vllm_missing,
            "rlaif_engine": vllm_missing,
            "rlaif_rollout_actor": vllm_missing,
        }
    else:
        with contextlib.ExitStack() as stack:
            pool = None
            if s.device == "cpu" and not s.quick:
                try:
                    require("ray")
                    pool = stack.enter_context(rollout_pool(model_dir))
                except Skipped as exc:
                    result.setdefault("skipped_paths", {})["rlaif_rollout_actor"] = str(exc)
            paths, result["vllm"] = run_vllm_in_process(s, model_dir, chats or [], ids, pool)
        names = {
            "ours": "rlaif_engine",
            "bare": "vllm_bare",
            "bare1": "vllm_bare_1thread",
            "actor": "rlaif_rollout_actor",
        }
        rates.update({names[k]: v for k, v in paths.items()})
    return result
