"""A finished run, run again: every stage is skipped and no Ray cluster starts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NoReturn, cast

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import rlaif.actors.cluster as cluster
from rlaif.config import STAGE_NAMES, to_run_config
from rlaif.core.io import write_manifest
from rlaif.run import run

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_a_finished_run_skips_every_stage_without_starting_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def ray_started(*_: object) -> NoReturn:
        pytest.fail("Ray must not start when every stage is done")

    monkeypatch.setattr(cluster, "connect", ray_started)
    run_dir = tmp_path / "run"
    for name in STAGE_NAMES:
        write_manifest(run_dir / name, {}, {})
    overrides = [f"run_dir={run_dir}", "logging.wandb_mode=disabled", "logging.verbose=true"]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    with caplog.at_level(logging.INFO, logger="rlaif"):
        run(to_run_config(cfg), cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
    assert all(f"stage {name}: done already" in caplog.text for name in STAGE_NAMES), caplog.text
    assert "no Ray cluster needed" in caplog.text
