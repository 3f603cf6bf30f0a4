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

import hydra
from omegaconf import DictConfig

from rlaif.config import RunConfig, register_configs, to_run_config

log = logging.getLogger("rlaif")

register_configs()


def run(run_cfg: RunConfig) -> None:
    from rlaif.actors.cluster import ClusterSpec, connect
    from rlaif.core.sink import ConsoleSink
    from rlaif.engines.models import resolve_model
    from rlaif.stages.pipeline import StageContext, run_stages
    from rlaif.stages.registry import STAGES

    model_path = resolve_model(run_cfg.model.name)
    c = run_cfg.cluster
    connect(ClusterSpec(c.address, c.num_cpus, c.num_gpus, c.include_dashboard, c.dashboard_host))
    ctx = StageContext(run_cfg, Path(run_cfg.run_dir), model_path, ConsoleSink())
    run_stages(ctx, [(name, STAGES[name]) for name in run_cfg.stages])
    print(f"\nrun folder: {ctx.run_dir.resolve()}")


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from rlaif.errors import USER_ERRORS

    try:
        run_cfg = to_run_config(cfg)
        run(run_cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
