"""The entry point: ``python -m rlaif.run [overrides]``.

Composes the Hydra config from ``conf/``, resolves the model, connects to Ray (a local
cluster unless ``cluster.address`` is set; none when every stage is done already) and
runs the job. ``--cfg job`` prints the resolved config; ``dry_run=true`` prints the
placement plan for the cluster in ``plan`` and starts nothing (`rlaif.plan`). Under
``-m`` (multirun) each job writes to its own folder,
``runs/<name>-sweep/<its overrides>``, and logs its own W&B run in a group named after
the sweep. An unknown or mistyped key fails with Hydra's error. Known bad input (a missing model, an unreachable
cluster, a bad file) ends with one line naming the culprit and exit status 1.
"""

from __future__ import annotations

import dataclasses
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
    from rlaif.actors.cluster import ClusterSpec, connect, probe_address, save_worker_logs
    from rlaif.core.run_logs import release_driver_logs, route_driver_logs, verbose_requested
    from rlaif.engines.models import resolve_model
    from rlaif.stages.pipeline import StageContext, pending_stages, run_stages
    from rlaif.stages.preflight import check_inputs
    from rlaif.stages.registry import STAGES

    run_dir = Path(run_cfg.run_dir)
    if not run_cfg.stages:  # nothing to run: no model, no Ray; the W&B run still records the config
        make_sink(run_cfg, run_dir, config_dict).close()
        print(f"\nrun folder: {run_dir.resolve()} (no stages)")
        return
    model_path = resolve_model(run_cfg.model.name)
    # Bad input fails here, before Ray starts or anything is written (rlaif.stages.preflight).
    if run_cfg.cluster.address:
        probe_address(run_cfg.cluster.address)
    check_inputs(run_cfg, run_dir, model_path)
    # Quiet by default: rlaif's own lines on the console, the rest under <run_dir>/logs/ (rlaif.core.run_logs).
    verbose = verbose_requested(run_cfg.logging.verbose)
    log_dir = run_dir / "logs"
    driver_log = None if verbose else route_driver_logs(log_dir)
    c = run_cfg.cluster
    try:
        if pending_stages(run_dir, run_cfg.stages):
            connect(ClusterSpec(c.address, c.num_cpus, c.num_gpus, c.include_dashboard, c.dashboard_host, verbose))
            if driver_log is not None:
                route_driver_logs(log_dir)  # again: ray.init configures Ray's own loggers
        else:
            log.info("every stage is done already: no Ray cluster needed")
        sink = make_sink(run_cfg, run_dir, config_dict)
        try:
            run_stages(StageContext(run_cfg, run_dir, model_path, sink), [(n, STAGES[n]) for n in run_cfg.stages])
        finally:
            sink.close()
    finally:
        if driver_log is not None:
            release_driver_logs(driver_log)
            actor_files = save_worker_logs(log_dir)
            print(
                f"\nlogs: {log_dir.resolve()} (driver.log and {len(actor_files)} actor output files; "
                "logging.verbose=true shows them on the console)",
                file=sys.stderr,
            )
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
    job = _sweep_job()
    name = run_cfg.name if job is None else f"{run_cfg.name}/{job[1]}"
    wb = WandbSink(
        lc.project,
        name,
        lc.wandb_mode,
        run_dir,
        config_dict,
        group,
        lc.entity,
        lc.tags,
        resume_id,
        log_artifacts=lc.log_artifacts,
    )
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


def _sweep_job() -> tuple[Path, str] | None:
    """Under Hydra multirun, this job's own run folder (sweep dir / subdir) and its W&B name suffix."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir) / str(hc.sweep.subdir), hc.job.override_dirname or str(hc.job.num)


def per_job(run_cfg: RunConfig, config_dict: dict[str, Any]) -> RunConfig:
    """Give a multirun job its own run folder, so jobs never share outputs or W&B run ids."""
    job = _sweep_job()
    if job is None:
        return run_cfg
    config_dict["run_dir"] = str(job[0])
    return dataclasses.replace(run_cfg, run_dir=str(job[0]))


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from rlaif.errors import USER_ERRORS

    try:
        run_cfg = to_run_config(cfg)
        if run_cfg.dry_run:
            from rlaif.plan import dry_run

            print(dry_run(run_cfg))
            return
        config_dict = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(config_dict, dict)
        run(per_job(run_cfg, config_dict), config_dict)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
