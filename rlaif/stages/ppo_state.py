"""Resuming an RL-CAI run: learner checkpoints and the driver state that goes with them.

A checkpoint is a folder ``checkpoint/iteration-<k>/`` holding the learner's DeepSpeed
state (actor and critic, every rank's shards), plus ``checkpoint/state.json`` naming
it, with the KL coefficient and a fingerprint of the settings. ``state.json`` is
written atomically after the folder is complete and older folders are removed only
then, so a kill at any moment leaves a usable checkpoint (or none). A run resumed with
other settings fails instead of mixing the two.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif.core.io import atomic_write_text, config_hash, read_jsonl, write_jsonl

if TYPE_CHECKING:
    # Types only: this module stays importable without Ray (its unit tests need none).
    from rlaif.actors.trainer_group import TrainerGroup
    from rlaif.config import RunConfig
    from rlaif.stages.ppo_roles import ModelPaths

_STATE = "state.json"


@dataclass(frozen=True)
class ResumeState:
    """Where a killed run continues: the next iteration to run and the KL coefficient then."""

    iteration: int
    kl_coef: float
    folder: str


def fingerprint(run: RunConfig, paths: ModelPaths) -> dict[str, Any]:
    """Settings a checkpoint is only valid for (run length, checkpoint cadence and logging may change)."""
    ppo = dataclasses.asdict(run.ppo)
    for key in ("iterations", "checkpoint_every", "log_samples"):
        ppo.pop(key)
    return {
        "ppo": ppo,
        "policy": str(paths.policy),
        "reward_model": str(paths.reward_model),
        "seed": run.seed,
        # ZeRO shards optimizer state per rank: a checkpoint loads into the same layout only.
        "learner_ranks": run.cluster.learner.num_workers,
        "zero_stage": run.deepspeed.zero_stage,
    }


class Checkpoint:
    """The checkpoint folder of one RL-CAI stage."""

    def __init__(self, directory: Path, settings: dict[str, Any]) -> None:
        self.directory = directory
        self.fingerprint = settings
        self.hash = config_hash(settings)

    def path(self, state: ResumeState) -> Path:
        return self.directory / state.folder

    def load(self) -> ResumeState | None:
        """The saved state, or None if there is none; ValueError if it was made with other settings."""
        path = self.directory / _STATE
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("hash") != self.hash:
            raise ValueError(
                f"{path}: a checkpoint made with other settings (hash {data.get('hash')}, now {self.hash}); "
                "delete that folder or choose another run name"
            )
        return ResumeState(int(data["iteration"]), float(data["kl_coef"]), str(data["folder"]))

    def save(self, learner: TrainerGroup, iteration: int, kl_coef: float) -> None:
        """Checkpoint the learner before `iteration` runs; then point state.json at it; then drop older ones."""
        folder = f"iteration-{iteration}"
        shutil.rmtree(self.directory / folder, ignore_errors=True)
        learner.run_all("save_checkpoint", str(self.directory / folder))
        state = {"iteration": iteration, "kl_coef": kl_coef, "folder": folder, "hash": self.hash}
        atomic_write_text(self.directory / _STATE, json.dumps(state, indent=2) + "\n")
        for old in self.directory.glob("iteration-*"):
            if old.name != folder:
                shutil.rmtree(old, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def keep_iterations_before(path: Path, iteration: int) -> None:
    """Rewrite a per-iteration JSONL log keeping only rows of iterations before `iteration` (torn tail dropped)."""
    if not path.is_file():
        return
    rows = [r for r in read_jsonl(path, tolerate_torn_tail=True) if int(r["iteration"]) < iteration]
    if rows:
        write_jsonl(path, rows)
    else:
        path.unlink()
