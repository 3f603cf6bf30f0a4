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

    def artifact(self, name: str, kind: str, path: str) -> None: ...

    def close(self) -> None: ...


class NullSink:
    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        pass

    def artifact(self, name: str, kind: str, path: str) -> None:
        pass

    def close(self) -> None:
        pass


class ConsoleSink(NullSink):
    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        log.info("%s%s", f"[step {step}] " if step is not None else "", text)


class PrefixedSink:
    """Namespaces one stage's metrics (``sft/loss``) and gives the stage its own step axis."""

    def __init__(self, inner: MetricsSink, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        named = {f"{self.prefix}/{k}": v for k, v in metrics.items()}
        if step is not None:
            named[f"{self.prefix}/step"] = step
        self.inner.log(named)

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.inner.table(f"{self.prefix}/{name}", columns, rows)

    def artifact(self, name: str, kind: str, path: str) -> None:
        self.inner.artifact(f"{self.prefix}-{name}", kind, path)

    def close(self) -> None:
        pass


class TeeSink:
    """Sends everything to several sinks (console and W&B)."""

    def __init__(self, *sinks: MetricsSink) -> None:
        self.sinks = sinks

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for s in self.sinks:
            s.log(metrics, step)

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        for s in self.sinks:
            s.table(name, columns, rows)

    def artifact(self, name: str, kind: str, path: str) -> None:
        for s in self.sinks:
            s.artifact(name, kind, path)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
