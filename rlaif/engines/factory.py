"""Build an engine from an `EngineSpec`; the backend is chosen by config."""

from __future__ import annotations

from rlaif.engines.base import Engine, EngineSpec


def build_engine(spec: EngineSpec) -> Engine:
    """Import only the backend asked for: vLLM is heavy and absent on some machines."""
    if spec.backend == "vllm":
        from rlaif.engines.vllm_engine import VLLMEngine

        return VLLMEngine(spec)
    from rlaif.engines.hf_engine import TransformersEngine

    return TransformersEngine(spec)
