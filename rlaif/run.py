"""The entry point: ``python -m rlaif.run [overrides]``.

Composes the Hydra config from ``conf/``, connects to Ray (a local cluster unless
``cluster.address`` is set), resolves the model and runs the job. ``--cfg job``
prints the resolved config; an unknown or mistyped key fails with Hydra's error.
Known bad input (a missing model, an unreachable cluster, a bad file) ends with one
line naming the culprit and exit status 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rlaif.config import RunConfig, register_configs, to_run_config
from rlaif.core.sink import ConsoleSink, MetricsSink, TeeSink

log = logging.getLogger("rlaif")

register_configs()


def run(run_cfg: RunConfig, config_dict: dict[str, Any]) -> None:
    from rlaif.actors.cluster import ClusterSpec, connect
    from rlaif.engines.models import resolve_model
    from rlaif.stages.pipeline import StageContext, run_stages
    from rlaif.stages.registry import STAGES

    model_path = resolve_model(run_cfg.model.name)
    c = run_cfg.cluster
    connect(ClusterSpec(c.address, c.num_cpus, c.num_gpus, c.include_dashboard, c.dashboard_host))
    run_dir = Path(run_cfg.run_dir)
    sink = make_sink(run_cfg, run_dir, config_dict)
    try:
        run_stages(StageContext(run_cfg, run_dir, model_path, sink), [(n, STAGES[n]) for n in run_cfg.stages])
    finally:
        sink.close()
    print(f"\nrun folder: {run_dir.resolve()}")


def make_sink(run_cfg: RunConfig, run_dir: Path, config_dict: dict[str, Any]) -> MetricsSink:
    """Console logging, plus one W&B run per pipeline run (its id kept in the run folder for resumes)."""
    console = ConsoleSink()
    lc = run_cfg.logging
    if lc.wandb_mode == "disabled":
        return console
    from rlaif.wandb_sink import WandbSink

    id_file = run_dir / ".wandb_run_id"
    resume_id = id_file.read_text().strip() if id_file.is_file() else None
    group = lc.group or _sweep_group()
    wb = WandbSink(lc.project, run_cfg.name, lc.wandb_mode, run_dir, config_dict, group, lc.entity, lc.tags, resume_id)
    id_file.parent.mkdir(parents=True, exist_ok=True)
    id_file.write_text(wb.run_id)
    return TeeSink(console, wb)


def _sweep_group() -> str | None:
    """Under Hydra multirun, the sweep's folder name groups its jobs in W&B."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return None


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from rlaif.errors import USER_ERRORS

    try:
        run_cfg = to_run_config(cfg)
        config_dict = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(config_dict, dict)
        run(run_cfg, config_dict)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
