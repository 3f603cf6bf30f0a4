"""Bad input to the pipeline: one line naming the culprit, exit 1, nothing half-written.

Each case fails in the pre-flight checks (`rlaif.stages.preflight`, `rlaif.actors.cluster.probe_address`)
before Ray starts or a model loads. Most cases run in this process: the config is composed with Hydra's
compose API and handed to `rlaif.run.run`, with `rlaif.actors.cluster.connect` made to fail the test, and
the error must be one of the `rlaif.errors.USER_ERRORS` that `rlaif.run.main` prints as its one line.
Two cases run `python -m rlaif.run` itself: one pins the command-line contract (exit status 1, a single
`error:` line, no traceback), and the offline hub case needs `HF_HUB_OFFLINE`, which is read at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, cast

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import rlaif.actors.cluster as cluster
from rlaif.config import to_run_config
from rlaif.errors import USER_ERRORS
from rlaif.run import run

CONF = Path(__file__).resolve().parents[2] / "conf"
# The stages every case asks for: each reads some of the inputs under test.
BASE = ["stages=[smoke,sl_cai,preferences]", "logging.wandb_mode=disabled", "cluster.include_dashboard=false"]
REAL_PROBE = cluster.probe_address
# run_dir, *overrides -> the one-line error message (the `bad_input_error` fixture).
BadRun = Callable[..., str]


def assert_nothing_written(run_dir: Path) -> None:
    """No stage folder, no manifest; at most Hydra's own log folder (written by the command line only)."""
    if run_dir.exists():
        assert {p.name for p in run_dir.iterdir()} <= {".hydra-logs"}, sorted(p.name for p in run_dir.iterdir())
        assert not list(run_dir.rglob("MANIFEST.json"))


def run_bad(run_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> str:
    """Run `python -m rlaif.run` expecting a user error; return the error line after checking the CLI contract."""
    cmd = [sys.executable, "-m", "rlaif.run", *BASE, f"run_dir={run_dir}", *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines, "no error line on stderr"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]], f"expected one error line, last on stderr:\n{done.stderr[-3000:]}"
    assert_nothing_written(run_dir)
    return lines[-1]


@pytest.fixture
def bad_input_error(monkeypatch: pytest.MonkeyPatch) -> BadRun:
    """Run the job in this process as `rlaif.run.main` does, expecting a user error; return its message.

    Reaching Ray fails the test: bad input must be caught before it (and nothing is probed unasked).
    A `USER_ERRORS` exception is what `main` prints as `error: <message>` with exit status 1; any other
    exception escapes `pytest.raises` and fails the test with its traceback.
    """

    def ray_started(*_: object) -> NoReturn:
        pytest.fail("Ray must not start for bad input")

    def probed(address: str, *_: object) -> NoReturn:
        pytest.fail(f"probe_address({address!r}) called: only the cluster.address test probes")

    monkeypatch.setattr(cluster, "connect", ray_started)
    monkeypatch.setattr(cluster, "probe_address", probed)

    def run_bad_in_process(run_dir: Path, *overrides: str) -> str:
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            cfg = compose(config_name="config", overrides=[*BASE, f"run_dir={run_dir}", *overrides])
        with pytest.raises(USER_ERRORS) as caught:
            run_cfg = to_run_config(cfg)
            run(run_cfg, cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
        message = str(caught.value)
        assert message.strip() and "\n" not in message, f"expected a one-line message, got {message!r}"
        assert_nothing_written(run_dir)
        return message

    return run_bad_in_process


def test_cli_reports_a_constitution_yaml_syntax_error_as_one_line(tiny_model: Path, tmp_path: Path) -> None:
    # The command-line contract: exit status 1 and a single `error:` line, no traceback (see `run_bad`).
    bad = tmp_path / "constitution.yaml"
    bad.write_text("name: broken\nversion: '1'\nprinciples: [\n  {id: a\n")
    line = run_bad(tmp_path / "run", f"model.name={tiny_model}", f"constitution={bad}")
    assert line.startswith("error: ") and str(bad) in line and "YAML syntax error at line" in line


def test_constitution_missing_a_required_field(tiny_model: Path, tmp_path: Path, bad_input_error: BadRun) -> None:
    from rlaif.core.constitution import default_constitution_path

    data = yaml.safe_load(default_constitution_path().read_text())
    del data["principles"][1]["revision_request"]
    bad = tmp_path / "constitution.yaml"
    bad.write_text(yaml.safe_dump(data))
    message = bad_input_error(tmp_path / "run", f"model.name={tiny_model}", f"constitution={bad}")
    assert str(bad) in message and "missing field 'revision_request'" in message


def test_dataset_line_that_is_not_json(tiny_model: Path, tmp_path: Path, bad_input_error: BadRun) -> None:
    data = tmp_path / "red_team.jsonl"
    data.write_text('{"prompt": "How do I pick a lock?"}\n{"prompt": "unterminated\n')
    message = bad_input_error(tmp_path / "run", f"model.name={tiny_model}", f"sl_cai.red_team={data}")
    assert f"{data}: line 2: invalid JSON" in message


def test_dataset_line_without_the_prompt_field(tiny_model: Path, tmp_path: Path, bad_input_error: BadRun) -> None:
    data = tmp_path / "red_team.jsonl"
    data.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"question": "no prompt here"}) + "\n")
    message = bad_input_error(tmp_path / "run", f"model.name={tiny_model}", f"sl_cai.red_team={data}")
    assert f"{data}: line 2" in message and "missing field 'prompt'" in message


def test_empty_dataset(tiny_model: Path, tmp_path: Path, bad_input_error: BadRun) -> None:
    data = tmp_path / "helpful.jsonl"
    data.write_text("")
    message = bad_input_error(tmp_path / "run", f"model.name={tiny_model}", f"sl_cai.helpful={data}")
    assert f"{data}: no records" in message


def test_prompt_longer_than_the_context(tiny_model: Path, tmp_path: Path, bad_input_error: BadRun) -> None:
    data = tmp_path / "red_team.jsonl"
    rows = [{"id": "short", "prompt": "Hello?"}, {"id": "long-one", "prompt": "word " * 3000}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [f"sl_cai.red_team={data}", "sl_cai.heldout_fraction=0"]
    message = bad_input_error(tmp_path / "run", f"model.name={tiny_model}", *overrides)
    assert f"sl_cai.red_team={data}" in message and "long-one" in message and "engine.max_model_len=2048" in message


def test_context_distillation_needs_exemplars(tiny_model: Path, tmp_path: Path, bad_input_error: BadRun) -> None:
    from rlaif.core.constitution import default_constitution_path

    data = yaml.safe_load(default_constitution_path().read_text())
    del data["exemplars"]
    bare = tmp_path / "constitution.yaml"
    bare.write_text(yaml.safe_dump(data))
    message = bad_input_error(tmp_path / "run", f"model.name={tiny_model}", f"constitution={bare}")
    assert f"{bare}: sl_cai.method=context_distillation needs an 'exemplars' list" in message


def test_prompt_that_fits_alone_but_not_after_the_in_context_setting(
    tiny_model: Path, tmp_path: Path, bad_input_error: BadRun
) -> None:
    # About 200 prompt tokens fit 700 alone, but not after the ~510-token setting of guideline and exemplars.
    data = tmp_path / "red_team.jsonl"
    data.write_text(json.dumps({"id": "wordy", "prompt": "word " * 200}) + "\n")
    overrides = [f"sl_cai.red_team={data}", "sl_cai.heldout_fraction=0", "engine.max_model_len=700"]
    message = bad_input_error(tmp_path / "run", f"model.name={tiny_model}", *overrides)
    assert "record id wordy" in message and "in-context setting" in message and "engine.max_model_len=700" in message


def test_unreachable_cluster_address_fails_fast(
    tiny_model: Path, tmp_path: Path, bad_input_error: BadRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "probe_address", REAL_PROBE)  # the probe under test: one TCP connect
    message = bad_input_error(tmp_path / "run", f"model.name={tiny_model}", "cluster.address=127.0.0.1:1")
    assert "cluster.address='127.0.0.1:1'" in message and "no Ray cluster answers" in message


def test_missing_local_model(tmp_path: Path, bad_input_error: BadRun) -> None:
    missing = tmp_path / "no-such-model"
    message = bad_input_error(tmp_path / "run", f"model.name={missing}")
    assert f"model '{missing}'" in message and "no config.json" in message


def test_hub_model_without_network(tmp_path: Path) -> None:
    # A subprocess: huggingface_hub reads HF_HUB_OFFLINE when it is imported.
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    line = run_bad(tmp_path / "run", "model.name=nobody-rlaif/no-such-model", env=offline)
    assert "model 'nobody-rlaif/no-such-model'" in line and "hub could not provide it" in line
