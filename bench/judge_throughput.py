"""Judge throughput against the engine's raw prefill throughput, in one process, on one engine.

    python bench/judge_throughput.py                       # embedded model, vLLM, 48 pairs
    python bench/judge_throughput.py --pairs runs/smoke/preferences/pairs.jsonl

1. Response pairs: read from ``--pairs``, or sampled here (two 64-token responses per
   red-team prompt) by the same engine.
2. Judge: `ConstitutionalJudge.label` over the pairs, both orders, one principle,
   the constitution's few-shot preamble; timed in two halves on a fresh prefix cache
   (the first half computes the shared preamble once, the second finds it cached).
   Reported: comparisons/s, and prompt tokens/s counting every prompt token the
   judge asked about (cached or not).
3. Raw prefill: as many prompts as the judge asked, each as long as the judge's mean
   prompt, of random token ids (nothing shared, so nothing is cached), one batch,
   ``max_tokens=1``: the engine's plain prefill rate on this machine.
4. Position bias of the judge on these pairs, with and without the few-shot preamble.

Prints one JSON object. Run it on an idle machine: shared cores make every rate noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from rlaif.actors.judge import ConstitutionalJudge
from rlaif.core.constitution import default_constitution_path, load_constitution, sample_principles
from rlaif.core.judging import Comparison, ResponsePair
from rlaif.core.preference_records import position_bias_stats, read_pairs
from rlaif.core.prompts import load_prompts
from rlaif.core.soft_labels import combine_label
from rlaif.engines.base import EngineSpec, Message, SamplingParams
from rlaif.engines.models import EMBEDDED_MODEL, resolve_model


def sample_pairs(judge: ConstitutionalJudge, n: int) -> list[ResponsePair]:
    prompts = load_prompts("builtin:red_team")[:n]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=64)  # no seed: see rlaif.stages.preferences
    gens = judge.engine.generate([[Message("user", p.prompt)] for p in prompts], params)
    return [
        ResponsePair(f"pair-{p.id}", p.id, p.prompt, g.completions[0].text, g.completions[1].text, 0)
        for p, g in zip(prompts, gens, strict=True)
    ]


def timed_label(judge: ConstitutionalJudge, comparisons: list[Comparison]) -> tuple[list, float, int]:
    before = judge.stats().prompt_tokens
    started = time.perf_counter()
    verdicts = judge.label(comparisons, both_orders=True, cot=False)
    return verdicts, time.perf_counter() - started, judge.stats().prompt_tokens - before


def raw_prefill(judge: ConstitutionalJudge, count: int, length: int) -> dict[str, float]:
    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt

    rng = random.Random(0)
    vocab = len(judge.engine.tokenizer)  # type: ignore[attr-defined]
    prompts = [TokensPrompt(prompt_token_ids=[rng.randrange(100, vocab) for _ in range(length)]) for _ in range(count)]
    started = time.perf_counter()
    judge.engine.llm.generate(prompts, VSamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    rate = count * length / seconds
    return {"prompts": count, "tokens_each": length, "seconds": seconds, "prompt_tokens_per_s": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--pairs", type=Path, default=None, help="pairs.jsonl of a preferences stage")
    parser.add_argument("--num-pairs", type=int, default=48)
    args = parser.parse_args()

    constitution = load_constitution(default_constitution_path())
    spec = EngineSpec(model_path=str(resolve_model(args.model)), backend="vllm", max_model_len=2048)
    judge = ConstitutionalJudge(spec, constitution.judge_few_shot)
    pairs = read_pairs(args.pairs)[: args.num_pairs] if args.pairs else sample_pairs(judge, args.num_pairs)
    comparisons = [Comparison(p, sample_principles(constitution, 1, seed=0, key=p.id)) for p in pairs]
    judge.engine.llm.reset_prefix_cache()  # type: ignore[attr-defined]
    half = len(comparisons) // 2
    result: dict[str, object] = {"pairs": len(pairs), "load_average": os.getloadavg()}
    verdicts, total_s, total_tokens = [], 0.0, 0
    for name, part in (("cold_half", comparisons[:half]), ("warm_half", comparisons[half:])):
        out, seconds, tokens = timed_label(judge, part)
        verdicts += out
        total_s, total_tokens = total_s + seconds, total_tokens + tokens
        result[name] = {"comparisons_per_s": len(part) / seconds, "prompt_tokens_per_s": tokens / seconds}
    result["judge"] = {
        "comparisons_per_s": len(comparisons) / total_s,
        "prompt_tokens_per_s": total_tokens / total_s,
        "mean_prompt_tokens": total_tokens / (2 * len(comparisons)),
    }
    result["raw_prefill"] = raw_prefill(judge, 2 * len(comparisons), round(total_tokens / (2 * len(comparisons))))
    labels = [combine_label(v.pair_id, v.principle_ids, v.p_a_order1, v.p_a_order2) for v in verdicts]
    result["position_bias_few_shot"] = position_bias_stats(labels)._asdict()  # type: ignore[union-attr]
    judge.preamble = ""  # the same engine, questions without the few-shot examples
    plain = judge.label(comparisons, both_orders=True, cot=False)
    labels = [combine_label(v.pair_id, v.principle_ids, v.p_a_order1, v.p_a_order2) for v in plain]
    result["position_bias_zero_shot"] = position_bias_stats(labels)._asdict()  # type: ignore[union-attr]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
