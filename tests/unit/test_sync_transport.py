"""The weight-sync group's two transports, shared memory and broadcast, carry the same bytes.

Two members of a real gloo group run in two threads of this process (TCP store, gloo
process group, memfd opened through /proc, as across processes).
"""

from __future__ import annotations

import threading

import pytest
import torch

from rlaif.core.buckets import plan_buckets
from rlaif.engines.weight_sync import ReceivedState, SyncGroup, receive_state, send_state, tensor_metas
from rlaif.trainers.distributed import find_free_port

BUCKET = 16 * 1024


def make_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embed": torch.randn(300, 64, generator=g),
        "norm": torch.randn(64, generator=g).to(torch.bfloat16),
        "proj": torch.randn(64, 80, generator=g),
        "head": torch.randn(1000, generator=g),
    }


@pytest.mark.parametrize("shared_memory", [True, False])
def test_pushes_arrive_bit_exact_through_either_transport(shared_memory: bool) -> None:
    port, metas = find_free_port(), tensor_metas(make_state(0).items())
    groups: dict[int, SyncGroup] = {}
    received: list[dict[str, torch.Tensor]] = []

    def member(rank: int) -> None:
        groups[rank] = SyncGroup("127.0.0.1", port, rank, 2, "gloo", 60, shared_memory=shared_memory)

    threads = [threading.Thread(target=member, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert groups[0].shared_memory is shared_memory and groups[1].shared_memory is shared_memory

    for seed in (1, 2):  # a second push reuses the shared file from its start
        state = make_state(seed)
        tensors = list(state.values())

        def send(tensors: list[torch.Tensor] = tensors) -> None:
            # One call per bucket, as the learner sends each bucket once it has gathered it.
            for k, bucket in enumerate(plan_buckets(metas, BUCKET)):
                send_state(groups[0], [tensors[i] for i in bucket], [metas[i] for i in bucket], BUCKET, first=k == 0)

        sender = threading.Thread(target=send)
        sender.start()
        named, stats = receive_state(groups[1], metas, BUCKET)
        sender.join(timeout=60)
        received.append({name: t.clone() for name, t in named})
        assert stats.bytes == sum(m.nbytes for m in metas) and stats.buckets > 3
        for name, tensor in state.items():
            assert received[-1][name].dtype == tensor.dtype
            assert torch.equal(received[-1][name], tensor), name
    assert not torch.equal(received[0]["embed"], received[1]["embed"])


def test_a_receiver_that_stops_early_drains_and_the_group_stays_in_step() -> None:
    """An engine that fails on its first tensor must still take every bucket: the next push then arrives intact."""
    port, metas = find_free_port(), tensor_metas(make_state(0).items())
    groups: dict[int, SyncGroup] = {}

    def member(rank: int) -> None:
        groups[rank] = SyncGroup("127.0.0.1", port, rank, 2, "gloo", 60)

    threads = [threading.Thread(target=member, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for seed, stop_early in ((1, True), (2, False)):
        tensors = list(make_state(seed).values())
        sender = threading.Thread(target=send_state, args=(groups[0], tensors, metas, BUCKET))
        sender.start()
        received = ReceivedState(groups[1], metas, BUCKET)
        got = {}
        for name, t in received:
            got[name] = t.clone()
            if stop_early:
                break  # as an engine that raises mid-load
        received.drain()
        sender.join(timeout=60)
        assert received.stats is not None and received.stats.bytes == sum(m.nbytes for m in metas)
    assert all(torch.equal(got[m.name], t) for m, t in zip(metas, tensors, strict=True))
