"""Bad input through `python -m rlaif.run`: one line naming the culprit, exit 1, nothing half-written.

Each case fails in the pre-flight checks (`rlaif.stages.preflight`, `rlaif.actors.cluster.probe_address`)
before Ray starts or a model loads, so each run takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml


def run_bad(run_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> str:
    """Run the pipeline expecting a user error; return the error line after checking the common contract."""
    cmd = [
        sys.executable,
        "-m",
        "rlaif.run",
        "stages=[smoke,sl_cai,preferences]",
        f"run_dir={run_dir}",
        "logging.wandb_mode=disabled",
        "cluster.include_dashboard=false",
        *overrides,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines, "no error line on stderr"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]], f"expected one error line, last on stderr:\n{done.stderr[-3000:]}"
    # Nothing half-written: no stage folder, no manifest; only Hydra's own log folder.
    if run_dir.exists():
        assert {p.name for p in run_dir.iterdir()} <= {".hydra-logs"}, sorted(p.name for p in run_dir.iterdir())
        assert not list(run_dir.rglob("MANIFEST.json"))
    return lines[-1]


def test_constitution_with_a_yaml_syntax_error(tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "constitution.yaml"
    bad.write_text("name: broken\nversion: '1'\nprinciples: [\n  {id: a\n")
    line = run_bad(tmp_path / "run", f"model.name={tiny_model}", f"constitution={bad}")
    assert str(bad) in line and "YAML syntax error at line" in line


def test_constitution_missing_a_required_field(tiny_model: Path, tmp_path: Path) -> None:
    from rlaif.core.constitution import default_constitution_path

    data = yaml.safe_load(default_constitution_path().read_text())
    del data["principles"][1]["revision_request"]
    bad = tmp_path / "constitution.yaml"
    bad.write_text(yaml.safe_dump(data))
    line = run_bad(tmp_path / "run", f"model.name={tiny_model}", f"constitution={bad}")
    assert str(bad) in line and "missing field 'revision_request'" in line


def test_dataset_line_that_is_not_json(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "red_team.jsonl"
    data.write_text('{"prompt": "How do I pick a lock?"}\n{"prompt": "unterminated\n')
    line = run_bad(tmp_path / "run", f"model.name={tiny_model}", f"sl_cai.red_team={data}")
    assert f"{data}: line 2: invalid JSON" in line


def test_dataset_line_without_the_prompt_field(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "red_team.jsonl"
    data.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"question": "no prompt here"}) + "\n")
    line = run_bad(tmp_path / "run", f"model.name={tiny_model}", f"sl_cai.red_team={data}")
    assert f"{data}: line 2" in line and "missing field 'prompt'" in line


def test_empty_dataset(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "helpful.jsonl"
    data.write_text("")
    line = run_bad(tmp_path / "run", f"model.name={tiny_model}", f"sl_cai.helpful={data}")
    assert f"{data}: no records" in line


def test_prompt_longer_than_the_context(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "red_team.jsonl"
    rows = [{"id": "short", "prompt": "Hello?"}, {"id": "long-one", "prompt": "word " * 3000}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = run_bad(tmp_path / "run", f"model.name={tiny_model}", f"sl_cai.red_team={data}", "sl_cai.heldout_fraction=0")
    assert f"sl_cai.red_team={data}" in line and "long-one" in line and "engine.max_model_len=2048" in line


def test_context_distillation_needs_exemplars(tiny_model: Path, tmp_path: Path) -> None:
    from rlaif.core.constitution import default_constitution_path

    data = yaml.safe_load(default_constitution_path().read_text())
    del data["exemplars"]
    bare = tmp_path / "constitution.yaml"
    bare.write_text(yaml.safe_dump(data))
    line = run_bad(tmp_path / "run", f"model.name={tiny_model}", f"constitution={bare}")
    assert f"{bare}: sl_cai.method=context_distillation needs an 'exemplars' list" in line


def test_prompt_that_fits_alone_but_not_after_the_in_context_setting(tiny_model: Path, tmp_path: Path) -> None:
    # About 200 prompt tokens fit 700 alone, but not after the ~510-token setting of guideline and exemplars.
    data = tmp_path / "red_team.jsonl"
    data.write_text(json.dumps({"id": "wordy", "prompt": "word " * 200}) + "\n")
    overrides = [f"sl_cai.red_team={data}", "sl_cai.heldout_fraction=0", "engine.max_model_len=700"]
    line = run_bad(tmp_path / "run", f"model.name={tiny_model}", *overrides)
    assert "record id wordy" in line and "in-context setting" in line and "engine.max_model_len=700" in line


def test_unreachable_cluster_address_fails_fast(tiny_model: Path, tmp_path: Path) -> None:
    line = run_bad(tmp_path / "run", f"model.name={tiny_model}", "cluster.address=127.0.0.1:1")
    assert "cluster.address='127.0.0.1:1'" in line and "no Ray cluster answers" in line


def test_missing_local_model(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    line = run_bad(tmp_path / "run", f"model.name={missing}")
    assert f"model '{missing}'" in line and "no config.json" in line


def test_hub_model_without_network(tmp_path: Path) -> None:
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    line = run_bad(tmp_path / "run", "model.name=nobody-rlaif/no-such-model", env=offline)
    assert "model 'nobody-rlaif/no-such-model'" in line and "hub could not provide it" in line
