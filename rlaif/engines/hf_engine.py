"""Hugging Face transformers backend of the engine interface.

Slower than vLLM (docs/design.md §7) but needs nothing beyond transformers: the reference for
the agreement tests, a fallback where vLLM is missing, and the path on a lent GPU
machine that has no vLLM wheel.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch

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
    truncate_at_stop,
)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TransformersEngine:
    """An `Engine` over `AutoModelForCausalLM.generate` and plain forward passes."""

    def __init__(self, spec: EngineSpec, batch_size: int = 16) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        self.batch_size = batch_size
        self.device = torch.device(spec.device)
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_path, trust_remote_code=spec.trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            spec.model_path, dtype=_DTYPES[spec.dtype], trust_remote_code=spec.trust_remote_code
        ).to(self.device)
        self.model.eval()
        self.renderer = PromptRenderer(self.tokenizer, spec.max_model_len)
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
        # `generate` stops at any of the generation config's EOS ids, which may be several.
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = {*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id} - {None}
        self.policy_version = 0
        self._counter = ThroughputCounter()

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        encoded = [self.renderer.encode(p, room=params.max_new_tokens) for p in prompts]
        if params.seed is not None:
            torch.manual_seed(params.seed)
        self._counter.start()
        generations = []
        for start in range(0, len(encoded), self.batch_size):
            generations.extend(self._generate_batch(encoded[start : start + self.batch_size], params))
        self._counter.stop(
            sum(len(ids) for ids in encoded), sum(len(c.token_ids) for g in generations for c in g.completions)
        )
        return generations

    def _generate_batch(self, encoded: list[list[int]], params: SamplingParams) -> list[Generation]:
        input_ids, attention = self._left_pad(encoded)
        greedy = params.temperature == 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=not greedy,
            num_return_sequences=params.n,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=self.pad_id,
        )
        if not greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.ignore_eos:
            kwargs.update(min_new_tokens=params.max_new_tokens)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        new_tokens = out.sequences[:, input_ids.shape[1] :]
        # scores are the processed logits (temperature, top-p) that the token was sampled from.
        logprobs = torch.stack(out.scores, dim=1).float().log_softmax(-1)
        token_lp = logprobs.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        generations = []
        for i, prompt_ids in enumerate(encoded):
            completions = []
            for j in range(params.n):
                row = i * params.n + j
                completions.append(self._completion(new_tokens[row], token_lp[row], params))
            generations.append(Generation(tuple(prompt_ids), tuple(completions), self.policy_version))
        return generations

    def _completion(self, tokens: torch.Tensor, token_lp: torch.Tensor, params: SamplingParams) -> Completion:
        ids = tokens.tolist()
        length, reason = len(ids), "length"
        ends = [i for i, t in enumerate(ids) if t in self.eos_ids]
        if ends:
            length, reason = ends[0] + 1, "stop"
        ids = ids[:length]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, params.stop)
        if stopped:
            reason = "stop"
        return Completion(text, tuple(ids), tuple(token_lp[:length].tolist()) if params.logprobs else (), reason)

    def _left_pad(self, encoded: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention[i, width - len(ids) :] = 1
        return input_ids.to(self.device), attention.to(self.device)

    @torch.no_grad()
    def score_options(self, requests: Sequence[OptionRequest]) -> list[OptionScores]:
        self._counter.start()
        scores, tokens = [], 0
        for r in requests:
            prompt_ids = self.renderer.encode(r.prompt, room=1)
            options = self.renderer.encode_options(r.options)
            tokens += len(prompt_ids) + sum(len(o) for o in options)
            scores.append(OptionScores(log_normalise(self._option_logprobs(prompt_ids, options))))
        self._counter.stop(tokens, 0)
        return scores

    def _option_logprobs(self, prompt_ids: list[int], options: list[list[int]]) -> list[float]:
        if all(len(o) == 1 for o in options):
            # One forward pass over the shared prefix gives every single-token option.
            logits = self.model(torch.tensor([prompt_ids], device=self.device)).logits[0, -1].float()
            logprobs = logits.log_softmax(-1)
            return [float(logprobs[o[0]]) for o in options]
        # Multi-token options: one batched pass over prefix + option, right-padded.
        seqs = [prompt_ids + o for o in options]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        logprobs = self.model(ids.to(self.device), attention_mask=mask.to(self.device)).logits.float().log_softmax(-1)
        totals = []
        for i, o in enumerate(options):
            positions = range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(o))
            totals.append(sum(float(logprobs[i, p, t]) for p, t in zip(positions, o, strict=True)))
        return totals

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> WeightLoad:
        started = time.perf_counter()
        # state_dict() lists tied weights under both names and shares their storage.
        params = self.model.state_dict()
        for name, tensor in named_tensors:
            if name not in params:
                raise KeyError(f"update_weights: the model has no parameter named {name!r}")
            params[name].copy_(tensor.to(params[name].dtype))
        self.policy_version = version
        return WeightLoad("copy", time.perf_counter() - started)

    def stats(self) -> ThroughputStats:
        return self._counter.snapshot()

    def sleep(self) -> None:
        """Move the weights to host memory, freeing the GPU for a colocated learner."""
        self.model.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def wake_up(self) -> None:
        self.model.to(self.device)

    def shutdown(self) -> None:
        del self.model
