"""Hydra multirun: each job gets its own run folder and W&B run, all in one W&B group.

Runs `python -m rlaif.run -m ...` for real with `stages=[]` (a job that runs no stage
starts neither Ray nor a model, but still opens its offline W&B run), then reads the
run files W&B wrote.
"""

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.wandb_records import read_records, run_files

ROOT = Path(__file__).resolve().parents[2]


def test_sweep_jobs_get_their_own_run_folders_and_one_wandb_group(tmp_path: Path) -> None:
    sweep = tmp_path / "demo-sweep"
    args = ["ppo.kl_coef=0.02,0.1", "label.cot=true,false", "stages=[]", "name=demo", f"hydra.sweep.dir={sweep}"]
    out = subprocess.run(
        [sys.executable, "-m", "rlaif.run", "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == [
        f"label.cot={cot},ppo.kl_coef={kl},stages=[]" for cot in ("False", "True") for kl in ("0.02", "0.1")
    ]
    runs = {}
    for job in jobs:
        (wandb_file,) = run_files(job)  # one W&B run per job, inside the job's own folder
        records = read_records(wandb_file)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["run_dir"] == str(job)
        assert (config["ppo"]["kl_coef"], config["label"]["cot"]) == (
            float(job.name.split("ppo.kl_coef=")[1].split(",")[0]),
            "cot=True" in job.name,
        )
        assert (job / ".wandb_run_id").read_text() == run.run_id
        runs[job.name] = (run.run_id, run.run_group, run.display_name)
    assert len({rid for rid, _, _ in runs.values()}) == 4
    assert {group for _, group, _ in runs.values()} == {"demo-sweep"}
    assert all(name == f"demo/{job}" for job, (_, _, name) in runs.items())
