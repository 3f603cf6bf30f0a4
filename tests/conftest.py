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
# torch, Ray, an engine) while the other core idles. xdist hands out whole groups, largest
# group first, then single tests in collection order. So the costliest files are collected
# first and start at once instead of forming a tail, and tests that share an expensive module
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
# Shared fixtures that cost a worker real time (test_ppo.py), each with its xdist group: the
# synchronous PPO run, the one-rank learner of `TestOneRankLearner`, and the crafted policy
# of every RL-CAI run there. Fixtures that some test uses together share one group
# (`_shared_fixture_groups`), so every test of a fixture runs on the worker that builds it.
_SHARED_FIXTURE_GROUPS = {
    "sync_rule_run": "ppo-sync-rule-run",
    "one_rank_learner": "ppo-one-rank-learner",
    "policy_saying_the": "ppo-policy-saying-the",
}


def _file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def _shared_fixture_groups(items: list[pytest.Item]) -> dict[str, str]:
    """The xdist group of each fixture of `_SHARED_FIXTURE_GROUPS`.

    Fixtures used by one test join; the joined groups' names, in table order, make the name.
    E.g. `sync_rule_run` needs `policy_saying_the`, so its tests and the other users of the
    policy form one group.
    """
    joined = {f: {f} for f in _SHARED_FIXTURE_GROUPS}
    for item in items:
        used = [f for f in _SHARED_FIXTURE_GROUPS if f in getattr(item, "fixturenames", ())]
        merged: set[str] = set().union(*(joined[f] for f in used))
        for f in merged:
            joined[f] = merged
    return {f: "+".join(g for k, g in _SHARED_FIXTURE_GROUPS.items() if k in joined[f]) for f in joined}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = _file_of(item)
        if path in _COSTLIEST_FIRST:
            return _COSTLIEST_FIRST.index(path)
        return len(_COSTLIEST_FIRST) + (1 if path.startswith("tests/unit/") else 0)

    items.sort(key=rank)  # stable: the order inside a file is kept
    shared = _shared_fixture_groups(items)
    for item in items:
        group = next((g for f, g in shared.items() if f in getattr(item, "fixturenames", ())), None)
        if group is None and _file_of(item) in _ONE_WORKER_PER_FILE:
            group = _file_of(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
