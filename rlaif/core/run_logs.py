"""Where a run's output goes: rlaif's own lines on the console, everything else in ``<run_dir>/logs/``.

By default (``logging.verbose=false``) the console carries rlaif's progress bars, stage
summaries, warnings and errors. The per-step metric lines (``rlaif.metrics`` at INFO, which W&B
and the progress bars already show) go to ``logs/driver.log`` only, as do the driver's other
records (Ray, W&B, Hydra's plugins, Python warnings). Ray does not forward the actors' output; each
actor process's stdout and stderr are copied from Ray's session folder into ``logs/`` when the
run ends (`copy_worker_logs`). ``logging.verbose=true`` or ``RLAIF_VERBOSE=1`` keeps the full
stream on the console as well. An actor's exception still reaches the driver, with its
traceback, as the error the run stops on.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

VERBOSE_ENV = "RLAIF_VERBOSE"
DRIVER_LOG = "driver.log"
_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
# Ray's worker logs: worker-<worker id>-<job id>-<pid>.out / .err
_WORKER_LOG = re.compile(r"^worker-[0-9a-f]+-(?P<job>[0-9a-f]+)-(?P<pid>\d+)\.(?P<stream>out|err)$")
_NAME_MARK = re.compile(r"^:(?:actor|task)_name:(\S+)$")


def verbose_requested(configured: bool) -> bool:
    """``logging.verbose``, or the environment variable ``RLAIF_VERBOSE`` set to 1/true/yes/on."""
    return configured or os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# The console sink's per-step scalars: in the file, on W&B and in the progress bars, not on the console.
METRICS_LOGGER = "rlaif.metrics"


class ConsoleFilter(logging.Filter):
    """Passes rlaif's own records at any level (the per-step metric lines only from WARNING) and anyone's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name == METRICS_LOGGER:
            return record.levelno >= logging.WARNING
        return record.name == "rlaif" or record.name.startswith("rlaif.")


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def _loggers(own_handlers_only: bool) -> list[logging.Logger]:
    """The root logger and every named one; with `own_handlers_only`, only those that do not propagate."""
    named = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    if own_handlers_only:
        named = [lg for lg in named if lg.handlers and not lg.propagate]
    return [logging.getLogger(), *named]


def route_driver_logs(log_dir: Path) -> Path:
    """Write every driver record to ``log_dir/driver.log`` and filter the console handlers.

    Covers the root logger and every logger that keeps its own handlers (Ray's do); call it
    again after importing a library that configures its loggers, it adds nothing twice.
    Python warnings are captured as log records, so they land in the file too.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    path = (log_dir / DRIVER_LOG).resolve()
    for logger in _loggers(own_handlers_only=True):
        for handler in logger.handlers:
            if _is_console(handler) and not any(isinstance(f, ConsoleFilter) for f in handler.filters):
                handler.addFilter(ConsoleFilter())
        if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path for h in logger.handlers):
            file_handler = logging.FileHandler(path, encoding="utf-8")
            file_handler.setFormatter(logging.Formatter(_FORMAT))
            logger.addHandler(file_handler)
    if logging.getLogger().level > logging.INFO or logging.getLogger().level == logging.NOTSET:
        logging.getLogger().setLevel(logging.INFO)
    logging.captureWarnings(True)
    return path


def release_driver_logs(path: Path) -> None:
    """Detach and close the ``driver.log`` handlers `route_driver_logs` added (a sweep's next job gets its own)."""
    path = path.resolve()
    for logger in _loggers(own_handlers_only=False):
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path:
                logger.removeHandler(handler)
                handler.close()


def _process_name(path: Path) -> str:
    """The actor class (or task) a Ray worker log belongs to, from the ``:actor_name:`` marker Ray writes."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for _, line in zip(range(20), f, strict=False):
            m = _NAME_MARK.match(line.strip())
            if m:
                return re.sub(r"[^\w.-]", "_", m.group(1))
    return "worker"


def copy_worker_logs(ray_logs: Path, job_id: str, dest: Path) -> list[Path]:
    """Copy this job's Ray worker logs into `dest` as ``<actor class>-<pid>.out|.err``; empty ones are skipped.

    Only the logs on this machine's Ray node can be copied; on a multi-node cluster the other
    nodes keep theirs in their own Ray session folder.
    """
    copied: list[Path] = []
    if not ray_logs.is_dir():
        return copied
    for src in sorted(ray_logs.iterdir()):
        m = _WORKER_LOG.match(src.name)
        if not m or m["job"] != job_id or src.stat().st_size == 0:
            continue
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / f"{_process_name(src)}-{m['pid']}.{m['stream']}"
        shutil.copyfile(src, target)
        copied.append(target)
    return copied
