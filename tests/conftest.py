"""Shared fixtures: the embedded model folder, a tiny random Llama, and a local Ray cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# vLLM engines run inside the test process (or the Ray actor), never in a child process.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    from rlaif.engines.models import EMBEDDED_MODEL, resolve_model

    return resolve_model(EMBEDDED_MODEL)


@pytest.fixture(scope="session")
def tiny_model(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", embedded_model)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A real local Ray cluster for the whole session (2 CPUs, no dashboard)."""
    import ray

    from rlaif.actors.cluster import start_local

    start_local(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
