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


# `make test` runs the suite on two pytest-xdist workers (`--dist loadgroup`, scripts/test.sh):
# on the 2-core box most of a test's time is one single-threaded process starting (Python,
# torch, Ray, an engine) while the other core idles. xdist hands out whole groups in
# collection order (`--no-loadscope-reorder`; an ungrouped test is a group of one), topping
# a worker up when it has two tests or fewer left. So the costliest files are collected
# first and start at once instead of forming a tail, and tests that share an expensive
# fixture form one group so that only one worker builds it. Measured seconds per file in the
# ci-local log decide the order; files not listed follow in their usual order.
_COSTLIEST_FIRST = (
    "tests/e2e/test_pipeline_e2e.py",
    "tests/e2e/test_faults.py",
    "tests/integration/test_behaviour_chain.py",
    "tests/integration/test_ppo.py",
    "tests/integration/test_preferences.py",
    "tests/integration/test_sweep_jobs.py",
    "tests/e2e/test_multinode.py",
    "tests/integration/test_sl_cai.py",
    "tests/integration/test_evaluate_command.py",
    "tests/integration/test_sft_stage.py",
    "tests/integration/test_trainers.py",
    "tests/integration/test_weight_sync.py",
)
# Module-scoped fixtures (an engine per parameter) that every test of the file uses.
_ONE_WORKER_PER_FILE = ("tests/integration/test_judge.py", "tests/integration/test_engines.py")
# Fixtures that cost a worker real time, with the xdist group of the tests that use them
# (test_ppo.py): the synchronous PPO run and the one-rank learner of `TestOneRankLearner`.
# The crafted policy every RL-CAI run there starts from takes seconds: each worker builds its own.
_SHARED_FIXTURE_GROUPS = {"sync_rule_run": "ppo-sync-rule-run", "one_rank_learner": "ppo-one-rank-learner"}


def _file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = _file_of(item)
        if path in _COSTLIEST_FIRST:
            return _COSTLIEST_FIRST.index(path)
        return len(_COSTLIEST_FIRST) + (1 if path.startswith("tests/unit/") else 0)

    items.sort(key=rank)  # stable: the order inside a file is kept
    for item in items:
        group = next((g for f, g in _SHARED_FIXTURE_GROUPS.items() if f in getattr(item, "fixturenames", ())), None)
        if group is None and _file_of(item) in _ONE_WORKER_PER_FILE:
            group = _file_of(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
