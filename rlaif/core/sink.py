"""Where metrics go: one sink for the driver, so call sites never ask "is W&B on?".

`NullSink` drops everything; `ConsoleSink` logs scalars through `logging`. A W&B sink
lives with the code that imports wandb; all three share the `MetricsSink` protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger("rlaif.metrics")


class MetricsSink(Protocol):
    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


class NullSink:
    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        pass

    def close(self) -> None:
        pass


class ConsoleSink(NullSink):
    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        log.info("%s%s", f"[step {step}] " if step is not None else "", text)
