"""`rlaif.actors.cluster.connect` starting a real local Ray cluster (in a subprocess: the test
session already holds one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rlaif.actors.cluster import WORKER_NICENESS_ENV

_SCRIPT = """
import json, os, ray
from rlaif.actors.cluster import ClusterSpec, connect
connect(ClusterSpec(address=None, num_cpus=1, num_gpus=0, include_dashboard=False, dashboard_host="127.0.0.1"))
print(json.dumps({"worker_nice": ray.get(ray.remote(num_cpus=1)(lambda: os.nice(0)).remote())}))
ray.shutdown()
"""


def test_local_cluster_runs_workers_at_normal_priority() -> None:
    # Ray's default is nice 15: a worker then loses its cores to Ray's own processes (cluster.py).
    env = {k: v for k, v in os.environ.items() if k != WORKER_NICENESS_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["worker_nice"] == os.nice(0)
