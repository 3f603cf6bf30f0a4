"""Resuming RL-CAI: checkpoint state with a settings fingerprint, and trimming per-iteration logs."""

import json
from pathlib import Path

import pytest

from rlaif.core.io import append_jsonl, read_jsonl
from rlaif.stages.ppo_state import Checkpoint, keep_iterations_before


def test_checkpoint_state_round_trips_and_refuses_other_settings(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "checkpoint", {"ppo": {"actor_lr": 1e-6}})
    assert checkpoint.load() is None
    (tmp_path / "checkpoint").mkdir()
    # What `save` writes once the learner's DeepSpeed checkpoint is complete.
    state = {"iteration": 4, "kl_coef": 0.07, "folder": "iteration-4", "hash": checkpoint.hash}
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps(state))
    loaded = checkpoint.load()
    assert loaded is not None and (loaded.iteration, loaded.kl_coef) == (4, 0.07)
    assert checkpoint.path(loaded) == tmp_path / "checkpoint" / "iteration-4"
    other = Checkpoint(tmp_path / "checkpoint", {"ppo": {"actor_lr": 2e-6}})
    with pytest.raises(ValueError, match="other settings"):
        other.load()


def test_logs_keep_only_iterations_before_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, [{"id": f"i{i}", "iteration": i} for i in range(5)])
    with path.open("a") as f:
        f.write('{"id": "torn", "itera')  # a line cut by a kill
    keep_iterations_before(path, 3)
    assert [r["iteration"] for r in read_jsonl(path)] == [0, 1, 2]
    keep_iterations_before(path, 0)
    assert not path.exists()
    keep_iterations_before(tmp_path / "absent.jsonl", 2)  # nothing to trim
