"""Run rlaif's benchmarks and write bench/results/: results.json, results.md and PNG plots.

    bash bench/setup.sh                    # once: matplotlib, the TRL baselines' venvs bench/.venv-trl{,-grpo}
    python -m bench                        # every benchmark, default size (~2.5 h on 2 idle cores)
    python -m bench --quick                # smoke size (a few minutes)
    python -m bench --only generation,judge
    python -m bench --device cuda --model smollm2-135m-random --only roofline,generation,sync
    make bench                             # setup, then python -m bench $(ARGS)

Benchmarks (each in its own process; one that cannot run here records {"skipped": reason}):
roofline, generation, judge, reward, ppo, grpo, estimators, sync. See each module's docstring for what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import EMBEDDED, ROOT, Settings, log, machine_info

BENCHMARKS = ("roofline", "generation", "judge", "reward", "ppo", "grpo", "estimators", "sync")
# Benchmarks that need more than the default --timeout at full size: 18 pipeline processes for estimators,
# 12 for ppo (2 settings x 3 runs x 2 sides, ~50 min), 6 for grpo (3 runs x 2 sides).
LONG_RUNNING = {"estimators": 5400, "ppo": 5400, "grpo": 3600}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument("--quick", action="store_true", help="tiny smoke sizes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--model",
        default=None,
        help=f"{EMBEDDED} (default on CPU), tiny, smollm2-135m-random (default on CUDA), or a folder",
    )
    parser.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 3; quick 1)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results[/gpu])")
    parser.add_argument(
        "--timeout",
        type=int,
        default=1800,
        help="seconds per benchmark before it is stopped (estimators and ppo: >= 5400, grpo: >= 3600)",
    )
    args = parser.parse_args()
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in only if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    model = args.model or ("smollm2-135m-random" if args.device == "cuda" else EMBEDDED)
    settings = Settings.make(args.device, model, args.quick, args.repeats)
    out = args.out or ROOT / "bench" / "results" / ("gpu" if args.device == "cuda" else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    results_path = out / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.is_file() else {}
    benchmarks = previous.get("benchmarks", {}) if set(only) != set(BENCHMARKS) else {}
    started = time.time()
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": machine_info(args.device),
        "settings": json.loads(settings.to_json()),
        "benchmarks": benchmarks,
    }
    for name in only:
        log(f"{name}: running (log in {out / 'logs' / (name + '.log')})")
        t0 = time.perf_counter()
        result = run_one(name, settings, out, max(args.timeout, LONG_RUNNING.get(name, 0)))
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        result["load_average_after"] = list(os.getloadavg())
        status = "skipped: " + result["skipped"] if "skipped" in result else result.get("error", "ok")
        log(f"{name}: {status} ({result['wall_s']:.0f} s)")
        benchmarks[name] = result
        doc["total_wall_s"] = round(time.time() - started, 1)
        results_path.write_text(json.dumps(doc, indent=2, default=str))
    from bench.report import write_report

    write_report(results_path)
    log(f"results in {out}: results.json, results.md, *.png")
    return 0


def run_one(name: str, settings: Settings, out: Path, timeout: int) -> dict:
    result_file = out / "logs" / f"{name}.json"
    result_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with open(out / "logs" / f"{name}.log", "w") as logf:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bench._one", name, settings.to_json(), str(result_file)],
                cwd=ROOT,
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
    if result_file.is_file():
        return dict(json.loads(result_file.read_text()))
    tail = (out / "logs" / f"{name}.log").read_text(errors="replace").strip().splitlines()[-15:]
    return {"error": f"exit code {rc}", "log_tail": tail}


if __name__ == "__main__":
    sys.exit(main())
