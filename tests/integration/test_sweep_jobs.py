"""A Hydra multirun whose jobs run a real stage: the jobs share one local Ray cluster in
the sweep's process, each writes its own run folder and W&B run, all in one W&B group.

The jobs run on the tiny random model (the `tiny_model` fixture), named by a link in the
sweep's working folder: its folder path, given as `model.name`, would go into each job's
folder name, which is made of the job's overrides, and nest it one folder per path part.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.wandb_records import read_records, run_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_smoke_jobs_run_one_after_another_in_their_own_folders(tiny_model: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "tiny-sweep"
    (tmp_path / "tiny").symlink_to(tiny_model, target_is_directory=True)
    args = [
        "ppo.kl_coef=0.02,0.1",
        "stages=[smoke]",
        "model.name=tiny",
        "smoke.num_prompts=1",
        "smoke.max_new_tokens=8",
        "name=tiny",
        "cluster.include_dashboard=false",
        f"hydra.sweep.dir={sweep}",
    ]
    # Run from tmp_path, where `tiny` resolves; this checkout's rlaif stays first on the path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, "-m", "rlaif.run", "-m", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == [
        f"model.name=tiny,ppo.kl_coef={kl},smoke.max_new_tokens=8,smoke.num_prompts=1,stages=[smoke]"
        for kl in ("0.02", "0.1")
    ]
    groups, ids = set(), set()
    for job in jobs:
        manifest = json.loads((job / "smoke" / "MANIFEST.json").read_text())
        assert manifest["counts"]["answers"] == 1
        assert len((job / "smoke" / "answers.jsonl").read_text().splitlines()) == 1
        (wandb_file,) = run_files(job)
        (run,) = [r.run for r in read_records(wandb_file) if r.WhichOneof("record_type") == "run"]
        groups.add(run.run_group)
        ids.add(run.run_id)
    assert groups == {"tiny-sweep"} and len(ids) == 2
