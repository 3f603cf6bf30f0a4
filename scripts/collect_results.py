"""Gather a finished run's learning results into one folder, for committing beside the README.

    python scripts/collect_results.py runs/laptop results/laptop

Reads the run's stage manifests, ``rl_cai/metrics.jsonl`` and ``evaluate/summary.json`` and
writes to the output folder:

- ``summary.json``: per model (initial, SFT, RL-CAI) the refusal rate on every held-out set;
  the reward model's held-out loss and accuracy before and after training; the SFT mix and
  the preference labels' counts; PPO's reward and KL per iteration and the measured
  engine/learner log-prob mismatch; when each stage finished;
- ``reward_kl.png``: mean reward-model reward and KL to the reference over the PPO iterations;
- ``harmless_helpful.png``: the evaluate stage's plot, copied.

It computes nothing new: every figure is read from the run's own files.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

STAGES = ("sl_cai", "sft", "preferences", "reward_model", "rl_cai", "evaluate")


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect(run_dir: Path) -> dict[str, Any]:
    """The figures worth keeping from a finished run, read from its manifests and logs."""
    manifests = {s: _read(run_dir / s / "MANIFEST.json") for s in STAGES if (run_dir / s / "MANIFEST.json").is_file()}
    evaluation = _read(run_dir / "evaluate" / "summary.json")
    metrics = _rows(run_dir / "rl_cai" / "metrics.jsonl")
    rm = manifests.get("reward_model", {})
    keys = ("reward_mean", "kl_mean", "clip_fraction", "approx_kl", "unfinished_fraction")
    mismatch = [r["logprob_mismatch_abs"] for r in metrics if r.get("logprob_mismatch_abs") is not None]
    mismatch_kl = [r["logprob_mismatch_kl"] for r in metrics if r.get("logprob_mismatch_kl") is not None]
    return {
        "run_dir": str(run_dir),
        "refusal": evaluation.get("refusal"),
        "refusal_judge": evaluation.get("refusal_judge"),
        "heldout_prompts": evaluation.get("prompts"),
        "win_rates": evaluation.get("win_rates"),
        "reward_model": {"heldout_before": rm.get("heldout_before"), "heldout_after": rm.get("heldout_after")},
        "counts": {s: m.get("counts") for s, m in manifests.items()},
        "ppo": {
            "iterations": [{k: r.get(k) for k in ("iteration", *keys)} for r in metrics],
            "logprob_mismatch_abs_mean": sum(mismatch) / len(mismatch) if mismatch else None,
            "logprob_mismatch_kl_mean": sum(mismatch_kl) / len(mismatch_kl) if mismatch_kl else None,
        },
        "finished_at": {s: m.get("finished_at") for s, m in manifests.items()},
    }


def plot_reward_kl(metrics: list[dict[str, Any]], path: Path) -> None:
    """Reward and KL per PPO iteration, on two axes of one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in metrics]
    fig, left = plt.subplots(figsize=(6, 3.5))
    left.plot(its, [r["reward_mean"] for r in metrics], "o-", color="tab:blue", label="reward (RM)")
    left.set_xlabel("PPO iteration")
    left.set_ylabel("mean reward-model reward", color="tab:blue")
    right = left.twinx()
    right.plot(its, [r["kl_mean"] for r in metrics], "s--", color="tab:red", label="KL to SFT")
    right.set_ylabel("mean KL to the SFT reference (nats)", color="tab:red")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary = collect(args.run_dir)
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_reward_kl(_rows(args.run_dir / "rl_cai" / "metrics.jsonl"), args.out_dir / "reward_kl.png")
    shutil.copy(args.run_dir / "evaluate" / "harmless_helpful.png", args.out_dir / "harmless_helpful.png")
    print(json.dumps({"refusal": summary["refusal"], "reward_model": summary["reward_model"]}, indent=2))


if __name__ == "__main__":
    main()
