"""Faults through `python -m rlaif.run` on the tiny model: a killed driver resumes, a killed actor restarts.

Two scenarios, each a command run twice (a run costs a Ray cluster and engines, so CI runs few):
sl_cai then preferences, where the critic, then the driver, then (in the resumed run) the rollout
and the judge are killed; and asynchronous PPO, where a rollout actor and then the driver are.

Each run is a subprocess in its own session, so the test finds the Ray processes it started
(raylet, workers, actors) by session id, kills only those, and cleans them up afterwards.
An actor is killed while it runs a batch: Ray names a worker process
``ray::<Class>.<method>`` while the method runs, which is what the test waits for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from rlaif.core.io import read_jsonl, read_manifest

BASE = ["logging.wandb_mode=disabled", "cluster.include_dashboard=false"]


def rlaif_cmd(run_dir: Path, model: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "rlaif.run", f"run_dir={run_dir}", f"model.name={model}", *BASE, *overrides]


def session_processes(sid: int) -> Iterator[tuple[int, str]]:
    """(pid, command line) of every live process in session `sid` (those the run started)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # Fields after the command name, which is in parentheses and may contain spaces.
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) != sid or fields[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        yield int(entry.name), cmdline


def kill_session(sid: int) -> None:
    """SIGKILL every process still alive in session `sid`, one by one by pid."""
    for pid, _ in list(session_processes(sid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def unique_ids(path: Path) -> list[str]:
    ids = [row["id"] for row in read_jsonl(path)]
    assert len(ids) == len(set(ids)), f"{path}: duplicate ids"
    return ids


# What to kill (the first batch of each role, while it runs), and which records to count afterwards.
KILL_TITLES = {
    "critic": "ray::ConstitutionalCritic.critique",
    "rollout": "ray::RolloutWorker.generate",
    "judge": "ray::ConstitutionalJudge.label",
}


def kill_mid_batch(
    proc: subprocess.Popen[bytes],
    titles: Mapping[str, str],
    deadline: float,
    until: Callable[[Mapping[str, int], Mapping[str, set[int]]], bool] = lambda killed, restarted: False,
) -> tuple[dict[str, int], dict[str, set[int]]]:
    """Watch the run's processes until it exits, `until(killed, restarted)` holds or the deadline passes.

    Each role's actor is SIGKILLed once, the first time one is seen running its method
    (``titles[role]``, a Ray process title); any other process of its class seen after
    that is its restart. Returns the killed pid and the restarted pids, per role.
    """
    killed: dict[str, int] = {}
    restarted: dict[str, set[int]] = {role: set() for role in titles}
    while proc.poll() is None and time.monotonic() < deadline and not until(killed, restarted):
        for pid, cmdline in session_processes(proc.pid):
            for role, title in titles.items():
                if role not in killed and cmdline.startswith(title):
                    os.kill(pid, signal.SIGKILL)  # mid-batch: the process is inside the method
                    killed[role] = pid
                elif role in killed and cmdline.startswith(title.split(".")[0]) and pid != killed[role]:
                    restarted[role].add(pid)
        time.sleep(0.05)
    return killed, restarted


def size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


@pytest.mark.slow
def test_killed_actors_restart_and_a_killed_driver_resumes_without_losing_or_duplicating_records(
    tiny_model: Path, tmp_path: Path
) -> None:
    """sl_cai then preferences, run twice with the same command (two runs, to keep CI short).

    1. The first run's critic actor is killed mid ``critique``; once it is back and the critique
       step has saved the chunk (of ``sl_cai.chunk_size``) it retried, the driver is killed with
       the rest of the run, mid stage.
    2. The second run resumes sl_cai, generating only what the first had not saved, then runs
       preferences; its rollout actor is killed mid ``generate`` and its judge mid ``label``.

    Each killed actor restarts in its run and its batch is retried: every record exactly once.
    """
    run_dir, logs = tmp_path / "run", (tmp_path / "first.log", tmp_path / "second.log")
    cmd = rlaif_cmd(
        run_dir,
        tiny_model,
        "stages=[sl_cai,preferences]",
        # The critique step is where the critic actor is killed, and then the driver, between two chunks.
        "sl_cai.method=critique_revision",
        "sl_cai.rounds=1",
        "sl_cai.num_helpful=4",
        "sl_cai.num_sensitive=0",
        "sl_cai.chunk_size=6",
        "sl_cai.max_new_tokens=96",
        "label.num_sensitive=0",
        "label.max_new_tokens=96",
        "label.principles_per_comparison=4",
    )
    work = run_dir / "sl_cai" / "work"
    critiques, size_at_kill = work / "critique_0.jsonl", list[int]()

    def retried_chunk_saved(killed: Mapping[str, int], restarted: Mapping[str, set[int]]) -> bool:
        """The critic is back and the critique step has saved a chunk since the kill: the one it retried.

        Chunks run one at a time and the restarted actor builds its engine before it retries, so
        the size read on the first call after the kill (0.05 s later) predates that chunk.
        """
        if "critic" not in killed:
            return False
        if not size_at_kill:
            size_at_kill.append(size(critiques))
        return bool(restarted["critic"]) and size(critiques) > size_at_kill[0]

    first = start(cmd, logs[0])
    try:
        critic = {"critic": KILL_TITLES["critic"]}
        killed, restarted = kill_mid_batch(first, critic, time.monotonic() + 600, retried_chunk_saved)
        stopped = retried_chunk_saved(killed, restarted)
        # Before any revision is saved, and before the last critique unless the last chunk was the retried one.
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        kill_session(first.pid)
    assert sorted(killed) == ["critic"], f"no critic actor was caught mid critique\n{tail(logs[0])}"
    assert restarted["critic"], f"no critic actor process after the kill\n{tail(logs[0])}"
    assert stopped and first.returncode == -signal.SIGKILL, (
        f"the driver finished, or saved no critique chunk after the critic's restart, before it was killed\n"
        f"{tail(logs[0])}"
    )
    assert read_manifest(run_dir / "sl_cai") is None and not (run_dir / "sl_cai" / "records.jsonl").exists()
    assert len(unique_ids(work / "answers.jsonl")) == 24

    # The second run starts a new Ray cluster: its actors, kills and restarts are its own.
    second = start(cmd, logs[1])
    try:
        roles = {role: KILL_TITLES[role] for role in ("rollout", "judge")}
        killed_later, restarted_later = kill_mid_batch(second, roles, time.monotonic() + 900)
        rc = second.poll()  # None: still running at the deadline
    finally:
        if second.poll() is None:
            second.kill()
        kill_session(second.pid)
    killed |= killed_later
    restarted |= restarted_later
    assert sorted(killed) == sorted(KILL_TITLES), f"killed only {sorted(killed)}\n{tail(logs[1])}"
    assert rc == 0, tail(logs[1])
    for role, pids in restarted.items():
        assert pids, f"no {role} actor process after the kill\n{tail(logs[1])}"
    # Every record exactly once, the expected number of them.
    sl_cai, prefs = read_manifest(run_dir / "sl_cai"), read_manifest(run_dir / "preferences")
    assert sl_cai is not None and prefs is not None
    assert len(unique_ids(run_dir / "sl_cai" / "records.jsonl")) == sl_cai["counts"]["records"] == 24
    assert len(unique_ids(run_dir / "sl_cai" / "helpful.jsonl")) == 4
    # The second run generated only what the first had not saved: no answers again, the rest of the chains.
    generated = sl_cai["generated_this_run"]
    assert "answers" not in generated
    assert generated.get("critique_0", 0) < 24 and generated.get("revision_0", 0) > 0
    for name in ("pairs.jsonl", "labels.jsonl", "trl.jsonl"):
        rows = list(read_jsonl(run_dir / "preferences" / name))
        assert len(rows) == prefs["counts"]["pairs"] == 24, name
    assert len(unique_ids(run_dir / "preferences" / "pairs.jsonl")) == 24
    assert len(unique_ids(run_dir / "preferences" / "labels.jsonl")) == 24


@pytest.mark.slow
def test_async_ppo_survives_a_killed_rollout_actor_and_a_killed_driver(tiny_model: Path, tmp_path: Path) -> None:
    """rl_cai with a rule reward and ``ppo.max_staleness=1`` (asynchronous rollout), killed twice.

    1. The rollout actor is killed while it samples ahead, after iteration 0. Ray restarts it with
       the starting weights (policy version 0) outside the sync group; the driver must rejoin it,
       push the current policy, and sample the in-flight batch again at the current version.
    2. The driver is killed after iteration 3, its checkpoint at iteration 3 written. A rerun
       resumes there: iterations 0-2 are kept, 3-5 are trained by the rerun, no sample twice.

    Every trained sample stays within one version of the policy it updates, in both runs.
    """
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    iterations, prompts, per_prompt = 6, 8, 2
    overrides = [
        "stages=[rl_cai]",
        "ppo.reward=token_count:1",
        "ppo.max_staleness=1",
        f"ppo.iterations={iterations}",
        f"ppo.prompts_per_iteration={prompts}",
        f"ppo.samples_per_prompt={per_prompt}",
        "ppo.max_new_tokens=64",
        "ppo.mini_batch_size=16",
        "ppo.micro_batch_size=8",
        "ppo.checkpoint_every=3",
        "engine.max_model_len=256",
    ]
    metrics = run_dir / "rl_cai" / "metrics.jsonl"
    cmd = rlaif_cmd(run_dir, tiny_model, *overrides)
    proc = start(cmd, log)
    killed, restarted, driver_killed = 0, set[int](), False
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            done = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
            if done >= 4 and killed:
                # Iterations 0-3 are recorded and the checkpoint at iteration 3 was written before row 3.
                os.kill(proc.pid, signal.SIGKILL)
                driver_killed = True
                break
            for pid, cmdline in session_processes(proc.pid):
                # After iteration 0, a `generate` running is a batch sampled ahead of the learner.
                if not killed and done >= 1 and cmdline.startswith(KILL_TITLES["rollout"]):
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                elif killed and cmdline.startswith("ray::RolloutWorker") and pid != killed:
                    restarted.add(pid)
            time.sleep(0.02)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_session(proc.pid)
    assert killed, f"no rollout actor was caught sampling after iteration 0\n{tail(log)}"
    assert restarted, f"no rollout actor process after the kill\n{tail(log)}"
    assert driver_killed and proc.returncode == -signal.SIGKILL, f"the driver finished first\n{tail(log)}"
    before = list(read_jsonl(metrics))
    # The in-flight batch was sampled again at the current version: counted once, in one iteration.
    again = [r for r in before if r["regenerated_samples"]]
    assert len(again) == 1 and again[0]["regenerated_samples"] == prompts * per_prompt, before
    assert again[0]["staleness_hist"] == [prompts * per_prompt], again
    assert sum(r["actor_restarts"] for r in before) == 1 and before[0]["actor_restarts"] == 0, before

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=900, start_new_session=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed at iteration 3" in second.stdout + second.stderr
    rows = list(read_jsonl(metrics))
    assert [r["iteration"] for r in rows] == list(range(iterations))
    assert rows[:3] == before[:3]  # kept; iteration 3 onwards trained again after the resume
    # Every (iteration, prompt, sample) exactly once, each within one version of the policy it trained.
    samples = list(read_jsonl(run_dir / "rl_cai" / "samples.jsonl"))
    assert len(unique_ids(run_dir / "rl_cai" / "samples.jsonl")) == iterations * prompts * per_prompt
    for k in range(iterations):
        of_k = [s for s in samples if s["iteration"] == k]
        assert all(0 <= k - s["policy_version"] <= 1 for s in of_k), k
        assert all(n == per_prompt for n in Counter(s["prompt_id"] for s in of_k).values())
        assert len({s["prompt_id"] for s in of_k}) == prompts
    # The resumed run's first batch is sampled at its own version; the rest one version behind again.
    assert rows[3]["staleness_hist"] == [prompts * per_prompt]
    assert all(r["staleness_max"] == 1 for r in rows[4:])
    manifest = read_manifest(run_dir / "rl_cai")
    assert manifest is not None and manifest["counts"]["iterations"] == iterations
