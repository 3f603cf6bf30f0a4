"""Weights & Biases as a metrics sink: one W&B run per pipeline run.

Offline by default (no key needed; sync later with ``wandb sync``); online when
configured, with the key taken from W&B's own environment or login, never from our
config and never logged. Stage metrics arrive namespaced (``sft/loss``) through
`PrefixedSink`, each stage with its own step metric.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class WandbSink:
    def __init__(
        self,
        project: str,
        name: str,
        mode: str,
        directory: Path,
        config: Mapping[str, Any],
        group: str | None = None,
        entity: str | None = None,
        tags: Sequence[str] = (),
        resume_id: str | None = None,
        log_artifacts: bool = True,
    ) -> None:
        import wandb

        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logging.wandb_mode must be offline, online or disabled, got {mode!r}")
        directory.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(
            project=project,
            name=name,
            group=group,
            entity=entity,
            tags=list(tags),
            mode=mode,
            dir=str(directory),
            config=dict(config),
            id=resume_id,
            resume="allow" if resume_id else None,
            settings=wandb.Settings(console="off", silent=True),
        )
        self._stages: set[str] = set()
        self.log_artifacts = log_artifacts
        log.info("W&B run %s (%s) in %s", self.run.name, mode, directory)

    @property
    def run_id(self) -> str:
        return str(self.run.id)

    def _define(self, key: str) -> None:
        stage = key.split("/", 1)[0]
        if "/" in key and stage not in self._stages:
            self._stages.add(stage)
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key in metrics:
            self._define(key)
        self.run.log(dict(metrics))

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.run.log({name: self.wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    def artifact(self, name: str, kind: str, path: str) -> None:
        if not self.log_artifacts:
            return
        if not Path(path).exists():
            log.warning("W&B artefact %s: %s does not exist, skipped", name, path)
            return
        art = self.wandb.Artifact(name.replace("/", "-"), type=kind)
        (art.add_dir if Path(path).is_dir() else art.add_file)(path)
        self.run.log_artifact(art)

    def close(self) -> None:
        # In offline mode finish() returns once W&B's service has taken the exit record,
        # before its writer has flushed the run file; teardown waits for the service to
        # stop, so the file is whole when close() returns (a sweep's next job, `wandb sync`
        # and our tests read it). The next wandb.init starts a new service.
        self.run.finish()
        self.wandb.teardown()
