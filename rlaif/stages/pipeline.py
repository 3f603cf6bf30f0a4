"""The driver: runs the stages in order, skipping those whose MANIFEST exists (docs/design.md §4).

Each stage is a function of a `StageContext`; it reads earlier stages' outputs from
their folders under the run directory and writes its own, manifest last.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rlaif.config import RunConfig
from rlaif.core.io import read_manifest
from rlaif.core.sink import MetricsSink, PrefixedSink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageContext:
    run: RunConfig
    run_dir: Path
    # The resolved folder of `model.name`: the starting policy.
    base_model: Path
    sink: MetricsSink

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage


Stage = Callable[[StageContext], None]


def pending_stages(run_dir: Path, names: Sequence[str]) -> list[str]:
    """The stages of `names` whose folder under `run_dir` holds no manifest yet: those a run would run."""
    return [name for name in names if read_manifest(run_dir / name) is None]


# Where each stage's metrics appear in W&B (``rm/loss``); other stages use their own name.
METRIC_NAMESPACE = {"preferences": "label", "reward_model": "rm", "rl_cai": "ppo", "evaluate": "eval"}


def run_stages(ctx: StageContext, stages: list[tuple[str, Stage]]) -> list[str]:
    """Run each stage unless its manifest says it is done; return the names that ran."""
    ran = []
    for name, stage in stages:
        if read_manifest(ctx.stage_dir(name)) is not None:
            log.info("stage %s: done already (%s), skipping", name, ctx.stage_dir(name) / "MANIFEST.json")
            continue
        log.info("stage %s: starting", name)
        stage(replace(ctx, sink=PrefixedSink(ctx.sink, METRIC_NAMESPACE.get(name, name))))
        ran.append(name)
    return ran
