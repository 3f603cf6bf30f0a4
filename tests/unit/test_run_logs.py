"""Quiet console: what stays on the console, what goes to <run_dir>/logs/ (rlaif.core.run_logs)."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlaif.core.run_logs import (
    DRIVER_LOG,
    copy_worker_logs,
    release_driver_logs,
    route_driver_logs,
    verbose_requested,
)


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """A console handler on the root logger and on a logger that keeps its own (as Ray's does)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root, lib = logging.getLogger(), logging.getLogger("somelib")
    lib.propagate = False
    own = logging.StreamHandler(stream)
    lib.addHandler(own)
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    lib.removeHandler(own)
    lib.propagate = True
    root.setLevel(level)
    logging.captureWarnings(False)


def test_the_console_keeps_rlaif_lines_and_errors_the_file_keeps_everything(
    console: io.StringIO, tmp_path: Path
) -> None:
    path = route_driver_logs(tmp_path / "logs")
    assert route_driver_logs(tmp_path / "logs") == path  # idempotent: no second file handler
    try:
        logging.getLogger("rlaif.stages.sft").info("sft: 45 steps")
        logging.getLogger("rlaif").warning("a warning of ours")
        logging.getLogger("rlaif.metrics").info("sft/loss=1.2 sft/step=3")
        logging.getLogger("somelib").info("library chatter")
        logging.getLogger("other.lib").warning("library warning")
        logging.getLogger("other.lib").error("library error")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("deprecated thing", FutureWarning, stacklevel=1)
    finally:
        release_driver_logs(path)
    shown = console.getvalue()
    assert "sft: 45 steps" in shown and "a warning of ours" in shown and "library error" in shown
    assert "library chatter" not in shown and "library warning" not in shown and "deprecated thing" not in shown
    assert "sft/loss=1.2" not in shown  # per-step metrics: file, W&B and progress bars only
    written = path.read_text()
    for line in ("sft: 45 steps", "sft/loss=1.2 sft/step=3", "library chatter", "library warning", "library error"):
        assert written.count(line) == 1, line
    assert written.count("FutureWarning: deprecated thing") == 1
    # Released: later records no longer reach this run's file.
    logging.getLogger("rlaif").info("after the run")
    assert "after the run" not in path.read_text()
    assert path.name == DRIVER_LOG


def test_verbose_from_config_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLAIF_VERBOSE", raising=False)
    assert not verbose_requested(False) and verbose_requested(True)
    for value, expected in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("RLAIF_VERBOSE", value)
        assert verbose_requested(False) is expected


def test_worker_logs_of_this_job_are_copied_under_their_actor_names(tmp_path: Path) -> None:
    ray_logs, dest = tmp_path / "ray", tmp_path / "run" / "logs"
    ray_logs.mkdir()
    (ray_logs / "worker-ab12-01000000-111.out").write_text(":job_id:01000000\n:actor_name:RolloutWorker\nINFO hi\n")
    (ray_logs / "worker-ab12-01000000-111.err").write_text(":job_id:01000000\n:actor_name:RolloutWorker\nTraceback\n")
    (ray_logs / "worker-cd34-01000000-222.out").write_text(":job_id:01000000\n:task_name:_address_and_port\n")
    (ray_logs / "worker-ef56-01000000-333.err").write_text("")  # empty: skipped
    (ray_logs / "worker-ab99-02000000-444.out").write_text(":actor_name:SFTTrainer\n")  # another job
    (ray_logs / "raylet.out").write_text("not a worker\n")
    copied = copy_worker_logs(ray_logs, "01000000", dest)
    assert sorted(p.name for p in copied) == [
        "RolloutWorker-111.err",
        "RolloutWorker-111.out",
        "_address_and_port-222.out",
    ]
    assert (dest / "RolloutWorker-111.err").read_text().endswith("Traceback\n")
    assert copy_worker_logs(tmp_path / "missing", "01000000", dest) == []


def test_smoke_answers_are_previewed_on_one_line() -> None:
    from rlaif.stages.smoke import preview

    assert preview("  Sure.\n\n```python\nprint(1)\n```  ") == "Sure. ```python print(1) ```"
    long = "word " * 100
    shown = preview(long, width=40)
    assert len(shown) == 40 and shown.endswith("…") and "\n" not in shown
    assert preview("x" * 50, width=10) == "x" * 9 + "…"  # one long token is cut, not dropped
    assert preview(" \n ") == "(empty answer)"
