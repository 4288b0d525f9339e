"""One Async service's queues as the HTTP API and the dispatcher use them.

`QueueService` joins a backend to the service's limits (from its `queue` spec) and adds what the
backends do not keep: waking waiters when something changed (a put, a commit, a result), and this
process's counters for /metrics. Waiters also re-poll every `POLL_S`, so several queue servers on
one Redis see each other's writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from openeas.queue.backend import QueueBackend
from openeas.queue.items import INPUT, QUEUES, SINK, Counters, Item, Limits
from openeas.spec.queue import QueueSpec

POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class QueueSettings:
    service: str
    source: Limits
    sink: Limits
    max_delivery: int
    window: int  # requests in flight per instance
    request_timeout_s: float  # how long one delivery may take
    result_ttl_s: float
    path: str

    @classmethod
    def from_spec(
        cls, service: str, spec: QueueSpec, worker_threads: int, keepalive_ms: int
    ) -> QueueSettings:
        def limits(side: object) -> Limits:
            return Limits(
                max_length=side.max_length,  # type: ignore[attr-defined]
                max_payload_bytes=side.max_payload_size_kb * 1024,  # type: ignore[attr-defined]
                auto_evict=side.auto_evict,  # type: ignore[attr-defined]
            )

        return cls(
            service=service,
            source=limits(spec.source),
            sink=limits(spec.sink),
            max_delivery=spec.max_delivery,
            window=spec.window or worker_threads,
            request_timeout_s=spec.max_idle_seconds or keepalive_ms / 1000.0,
            result_ttl_s=spec.sink.ttl_seconds,
            path=spec.path,
        )

    def limits(self, queue: str) -> Limits:
        return self.source if queue == INPUT else self.sink


class QueueService:
    def __init__(self, settings: QueueSettings, backend: QueueBackend):
        self.settings = settings
        self.backend = backend
        self.counters = Counters()
        self._changed = {q: asyncio.Event() for q in QUEUES}
        self.started_at = time.time()

    def notify(self, queue: str) -> None:
        """Wake everyone waiting on `queue` (a fresh event per round, so no one misses one)."""
        event = self._changed[queue]
        self._changed[queue] = asyncio.Event()
        event.set()

    async def wait_change(self, queue: str, timeout: float) -> None:
        """Return when `queue` changed here, or after min(timeout, POLL_S)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed[queue].wait(), timeout=max(0.0, min(timeout, POLL_S)))

    async def put(self, queue: str, data: bytes, tags: dict[str, str], priority: int) -> Item:
        item = await self.backend.put(queue, data, tags, priority, self.settings.limits(queue))
        self.counters.puts[queue] += 1
        if queue == INPUT:
            self.counters.last_activity = time.time()
        self.notify(queue)
        return item

    async def get_wait(
        self,
        queue: str,
        index: int,
        length: int,
        request_id: str | None,
        timeout_s: float,
        tags: dict[str, str],
    ) -> list[Item]:
        """Items now, or the first ones that arrive within timeout_s (long polling)."""
        deadline = time.monotonic() + timeout_s
        while True:
            items = await self.backend.get(queue, index, length, request_id)
            if tags:
                items = [i for i in items if all(i.tags.get(k) == v for k, v in tags.items())]
            left = deadline - time.monotonic()
            if items or left <= 0:
                return items
            await self.wait_change(queue, left)

    async def remove(self, queue: str, indexes: list[int]) -> int:
        n = await self.backend.delete(queue, indexes)
        if n:
            self.notify(queue)
        return n

    async def sink_room(self, want: int, reserved: int) -> int:
        """How many of `want` more results the sink can take, counting `reserved` ones still
        being worked on: dispatch takes new work only within it (backpressure). A sink with
        auto_evict drops its oldest results instead."""
        room = max(0, self.settings.sink.max_length - await self.backend.length(SINK) - reserved)
        if room < want and self.settings.sink.auto_evict:
            oldest = await self.backend.get(SINK, 0, want - room)
            room += await self.backend.delete(SINK, [i.index for i in oldest])
        return min(room, want)
