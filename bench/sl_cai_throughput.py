"""SL-CAI critique -> revision throughput on one critic engine, in one process, with and without prefix caching.

    python bench/sl_cai_throughput.py                    # embedded model, vLLM, 24 prompts, 2 rounds
    python bench/sl_cai_throughput.py --prompts 64 --max-new-tokens 96

For each setting a fresh `ConstitutionalCritic` answers ``--prompts`` red-team prompts,
then runs ``--rounds`` rounds of one batched critique call and one batched revision
call, exactly as the ``sl_cai`` stage does (without Ray). Reported per setting:
chains/min (a chain = an answer plus every round's critique and revision), generated
tokens/s end to end and inside the engine, and prompt tokens/s (every prompt token asked
about, cached or not: the preamble is most of them).

Prints one JSON object. Run it on an idle machine: shared cores make every rate noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from rlaif.actors.critic import AnswerTask, ConstitutionalCritic
from rlaif.core.cai import CritiqueTask, RevisionTask, principle_for
from rlaif.core.constitution import default_constitution_path, load_constitution
from rlaif.core.prompts import load_prompts
from rlaif.engines.base import EngineSpec, SamplingParams
from rlaif.engines.models import EMBEDDED_MODEL, resolve_model


def chains(critic: ConstitutionalCritic, n: int, rounds: int, params: SamplingParams) -> dict[str, float]:
    """Answer, then `rounds` batched critique and revision calls; rates of this run alone."""
    constitution = load_constitution(default_constitution_path())
    prompts = load_prompts("builtin:red_team")[:n]
    started = time.perf_counter()
    answers = {o.record_id: o.text for o in critic.answer([AnswerTask(p.id, p.prompt) for p in prompts], params)}
    for r in range(rounds):
        principle = {p.id: principle_for(constitution, 0, p.id, r) for p in prompts}
        crit = critic.critique([CritiqueTask(p.id, p.prompt, answers[p.id], principle[p.id]) for p in prompts], params)
        critiques = {o.record_id: o.text for o in crit}
        tasks = [RevisionTask(p.id, p.prompt, answers[p.id], principle[p.id], critiques[p.id]) for p in prompts]
        answers = {o.record_id: o.text or answers[o.record_id] for o in critic.revise(tasks, params)}
    wall = time.perf_counter() - started
    stats = critic.stats()
    return {
        "chains": n,
        "wall_s": wall,
        "chains_per_min": 60 * n / wall,
        "generated_tokens": stats.generated_tokens,
        "tokens_per_s_end_to_end": stats.generated_tokens / wall,
        "tokens_per_s_in_engine": stats.generated_tokens_per_s,
        "prompt_tokens_per_s_in_engine": stats.prompt_tokens_per_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    model = str(resolve_model(args.model))
    constitution = load_constitution(default_constitution_path())
    params = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens)
    results = {"load_average_before": os.getloadavg()[0]}
    for caching in (True, False):
        spec = EngineSpec(model_path=model, backend="vllm", enable_prefix_caching=caching)
        critic = ConstitutionalCritic(spec, constitution.critique_few_shot)
        try:
            results["prefix_cache_on" if caching else "prefix_cache_off"] = chains(
                critic, args.prompts, args.rounds, params
            )
        finally:
            critic.engine.shutdown()
    results["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
