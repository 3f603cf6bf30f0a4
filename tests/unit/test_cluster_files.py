"""The launch files in cluster/: each parses against its schema, describes the cluster
that +experiment=large plans for, and its job command composes with Hydra.

- ray-cluster.yaml: validated with Ray's own autoscaler schema;
- kuberay-rayjob.yaml: a ray.io/v1 RayJob whose entrypoint runs the large experiment;
- slurm.sbatch: `bash -n`, then a dry run (DRY_RUN=1) that prints the commands it would run.
"""

import importlib.util
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import yaml
from hydra import compose, initialize_config_dir

from rlaif.config import RunConfig, register_configs, to_run_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
register_configs()


def compose_job(command: str) -> RunConfig:
    """The config `python -m rlaif.run <overrides>` would run, from a command line."""
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "rlaif.run"] or words[1:3] == ["-m", "rlaif.run"], command
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return to_run_config(compose(config_name="config", overrides=words[3:]))


def large() -> RunConfig:
    return compose_job("python -m rlaif.run +experiment=large")


def test_ray_cluster_yaml_validates_against_rays_schema() -> None:
    ray_spec = importlib.util.find_spec("ray")  # the installed Ray's schema, without importing Ray
    assert ray_spec is not None and ray_spec.origin is not None
    schema = json.loads((Path(ray_spec.origin).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    bad = config | {"max_workerz": 3}  # the schema forbids unknown keys: a typo fails here, not on AWS
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("ray-schema.json accepted an unknown key")


def test_ray_cluster_matches_the_large_plan_and_keeps_the_dashboard_local() -> None:
    text = (CLUSTER / "ray-cluster.yaml").read_text()
    config = yaml.safe_load(text)
    plan = large().plan
    workers = config["available_node_types"]["worker.gpu"]
    assert 1 + workers["min_workers"] == 1 + config["max_workers"] == plan.nodes
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--head" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert all("0.0.0.0" not in c for c in head_start.split())
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])
    assert any('".[gpu]"' in c for c in config["setup_commands"])
    # The documented job command runs the large experiment on the head node, and it composes.
    (job,) = re.findall(r"ray exec cluster/ray-cluster\.yaml '([^']*)'", text)
    command = job.split("&&")[-1].strip().replace(".venv/bin/python", "python")
    run = compose_job(command)
    assert run.name == "large" and run.cluster.address == "auto"


def test_rayjob_manifest_runs_the_large_experiment_on_the_planned_cluster() -> None:
    job = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m rlaif.run +experiment=large")
    run = compose_job(spec["entrypoint"])
    assert run.name == "large" and run.cluster.address == "auto" and run.logging.wandb_mode == "online"
    cluster = spec["rayClusterSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    assert 1 + workers["replicas"] == run.plan.nodes
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    for group in (head, workers):
        (container,) = group["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == run.plan.gpus_per_node
    # The W&B key comes from a secret, never a literal value.
    env = {e["name"]: e for e in head["template"]["spec"]["containers"][0].get("env", [])}
    assert "valueFrom" in env["WANDB_API_KEY"] and "value" not in env["WANDB_API_KEY"]


def test_slurm_script_parses_and_its_dry_run_prints_head_workers_and_job() -> None:
    script = CLUSTER / "slurm.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | {"DRY_RUN": "1"}
    out = subprocess.run(
        ["bash", str(script), "ppo.kl_coef=0.1"], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    lines = out.stdout.strip().splitlines()
    heads = [line for line in lines if "ray start --head" in line]
    workers = [line for line in lines if "ray start --address=node-0:6379" in line]
    assert len(heads) == 1 and "--dashboard-host=127.0.0.1" in heads[0] and "-w node-0" in heads[0]
    assert [w.split("-w ")[1].split()[0] for w in workers] == ["node-1", "node-2", "node-3"]
    assert all("--num-gpus=8" in line for line in heads + workers)
    job = lines[-1]
    assert job.startswith(".venv/bin/python -m rlaif.run +experiment=large cluster.address=node-0:6379")
    run = compose_job(job.replace(".venv/bin/python", "python"))
    assert run.cluster.address == "node-0:6379" and run.ppo.kl_coef == 0.1
    assert 1 + len(workers) == run.plan.nodes
