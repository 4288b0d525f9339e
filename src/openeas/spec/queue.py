"""The `queue` block of an asynchronous (`metadata.type: "Async"`) service spec.

EAS gives every Async service a queue sub-service with an input queue (`source`) and an output
queue (`sink`). The field names follow EAS's "queue sub-service" parameters; `window` and
`sink.ttl` are openeas extensions (EAS takes the window from the framework and keeps results until
they are read). Resource fields EAS uses to size the queue sub-service's own instances (`cpu`,
`memory`, `resource`, `min_replica`, `max_replica`) are accepted and ignored: here the queue
server is one light process per service. docs/async.md lists every default.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

ASYNC_TYPE = "Async"
DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration_seconds(value: int | float | str) -> float:
    """`30`, `"30s"`, `"10m"`, `"1h"`, `"500ms"`, `"2d"` -> seconds."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    m = DURATION_RE.match(value.strip())
    if not m:
        raise ValueError('a duration is seconds (like 30) or a number with ms, s, m, h or d (like "10m")')
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class QueueSideSpec(_Strict):
    """Limits of one queue (the input `source` or the output `sink`)."""

    max_length: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    max_payload_size_kb: Annotated[int, Field(ge=1, le=1_048_576)] = 8192
    # full queue: False refuses the new item (429 on put; dispatch pauses for the sink),
    # True drops the oldest waiting item to make room
    auto_evict: bool = False


class SinkSpec(QueueSideSpec):
    # results older than this are deleted (openeas extension; EAS keeps them until read)
    ttl: int | float | str = "1d"

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: int | float | str) -> int | float | str:
        if duration_seconds(v) <= 0:
            raise ValueError("ttl must be above 0")
        return v

    @property
    def ttl_seconds(self) -> float:
        return duration_seconds(self.ttl)


class QueueSpec(_Strict):
    source: QueueSideSpec = Field(default_factory=QueueSideSpec)
    sink: SinkSpec = Field(default_factory=SinkSpec)
    # deliveries of one request (first try included) before it becomes a dead letter
    max_delivery: Annotated[int, Field(ge=1, le=1000)] = 5
    # longest an instance may work on one request before it is taken back and delivered again;
    # "0" means metadata.rpc.keepalive (EAS's per-request timeout)
    max_idle: int | float | str = 0
    # requests in flight per instance; None means metadata.rpc.worker_threads
    window: Annotated[int, Field(ge=1, le=10_000)] | None = None
    # path on the instance that receives each request (the put's body, POST)
    path: str = "/"
    # sizing of EAS's queue sub-service instances: accepted, ignored (one process here)
    cpu: float | None = None
    memory: int | None = None
    resource: str | None = None
    min_replica: int | None = None
    max_replica: int | None = None

    @field_validator("max_idle")
    @classmethod
    def _max_idle(cls, v: int | float | str) -> int | float | str:
        duration_seconds(v)
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError('the path on the instance starts with "/"')
        return v

    @property
    def max_idle_seconds(self) -> float:
        return duration_seconds(self.max_idle)

    def warnings(self) -> list[str]:
        ignored = [n for n in ("cpu", "memory", "resource", "min_replica", "max_replica") if getattr(self, n)]
        return [f"queue.{n}: accepted and ignored; the queue server is one process here" for n in ignored]
