"""Feeds an Async service's ready instances from its input queue and writes their answers to the sink.

The instances stay ordinary HTTP services: each request is POSTed to the instance (`queue.path`,
"/" by default) with the body that was put. Each instance gets at most `window` requests at a time
(EAS's subscription window). An answer below 500 is the result: it goes to the sink with the
status code in the `lastCode` tag, and the input item is removed in the same step. A 5xx answer,
a broken connection or a timeout is a failed try: the item waits again until it has had
`max_delivery` deliveries, then it becomes a dead letter. A claim carries a lease a little longer
than the request timeout, so items held by a queue server that died are delivered again too.
While the sink is full no new work is taken (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from openeas.queue.instance_client import DeliveryFailed, InstanceClient, NotDelivered
from openeas.queue.items import DEAD, INPUT, SINK, TAG_LAST_CODE, TAG_SOURCE_INDEX, Item
from openeas.queue.service import QueueService

log = logging.getLogger("openeas.queue")

LEASE_MARGIN_S = 15.0
REFRESH_S = 0.5  # how often the instance list is re-read
HOUSEKEEPING_S = 1.0
CONNECT_BACKOFF_S = 1.0


@dataclass(frozen=True, slots=True)
class Target:
    """A ready instance the dispatcher may send work to."""

    id: str
    host: str
    port: int


ListTargets = Callable[[], Awaitable[list[Target]]]


class Dispatcher:
    def __init__(self, svc: QueueService, list_targets: ListTargets):
        self.svc = svc
        self.list_targets = list_targets
        self._feeders: dict[str, asyncio.Task[None]] = {}
        self._in_flight: dict[str, int] = {}
        self._client = InstanceClient(svc.settings.request_timeout_s)
        self.targets: list[Target] = []
        self._down_until: dict[str, float] = {}  # instances refusing connections rest a while

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    async def run(self) -> None:
        housekeeping = asyncio.create_task(self._housekeeping())
        try:
            while True:
                try:
                    self.targets = await self.list_targets()
                except Exception as exc:  # the store may be away for a while: keep what we have
                    log.warning("cannot list instances (%s); keeping the last list", type(exc).__name__)
                self._sync_feeders()
                await asyncio.sleep(REFRESH_S)
        finally:
            housekeeping.cancel()
            for task in self._feeders.values():
                task.cancel()
            await asyncio.gather(housekeeping, *self._feeders.values(), return_exceptions=True)
            await self._client.close()

    def _sync_feeders(self) -> None:
        live = {t.id: t for t in self.targets}
        for tid, task in list(self._feeders.items()):
            if tid not in live or task.done():
                task.cancel()
                del self._feeders[tid]
        for tid, target in live.items():
            if tid not in self._feeders:
                self._feeders[tid] = asyncio.create_task(self._feed(target))

    async def _feed(self, target: Target) -> None:
        """Keep up to `window` requests in flight on one instance."""
        consumer = f"instance:{target.id}"
        window = self.svc.settings.window
        lease = self.svc.settings.request_timeout_s + LEASE_MARGIN_S
        active: set[asyncio.Task[None]] = set()
        self._in_flight[target.id] = 0
        try:
            while True:
                rest = self._down_until.get(target.id, 0.0) - time.monotonic()
                if rest > 0:
                    await asyncio.sleep(rest)
                free = window - len(active)
                items: list[Item] = []
                if free > 0:
                    free = await self.svc.sink_room(free, self.in_flight)
                if free > 0:
                    items = await self.svc.backend.claim(INPUT, consumer, free, lease)
                for item in items:
                    task = asyncio.create_task(self._deliver(target, consumer, item))
                    active.add(task)
                    self._in_flight[target.id] = len(active)
                    task.add_done_callback(lambda t: self._done(target.id, active, t))
                if not items:
                    await self.svc.wait_change(INPUT if free > 0 else SINK, 1.0)
        finally:
            for task in active:
                task.cancel()
            self._in_flight.pop(target.id, None)

    def _done(self, target_id: str, active: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        active.discard(task)
        if target_id in self._in_flight:
            self._in_flight[target_id] = len(active)
        self.svc.notify(INPUT)  # a slot is free: wake the feeder

    async def _deliver(self, target: Target, consumer: str, item: Item) -> None:
        counters = self.svc.counters
        counters.delivered += 1
        if item.deliveries > 1:
            counters.redelivered += 1
        headers = {
            "X-Eas-Queueservice-Request-Id": item.request_id,
            "X-Eas-Queueservice-Index": str(item.index),
            "Content-Type": "application/octet-stream",
        }
        try:
            status, body = await self._client.post(
                target.host, target.port, self.svc.settings.path, item.data, headers
            )
            self._down_until.pop(target.id, None)
        except NotDelivered:
            # never reached the instance: not a try; rest this instance, the item waits again
            self._down_until[target.id] = time.monotonic() + CONNECT_BACKOFF_S
            counters.delivered -= 1
            await self.svc.backend.release(
                INPUT, item.index, consumer, self.svc.settings.max_delivery, count=False
            )
            self.svc.notify(INPUT)
            return
        except DeliveryFailed as exc:
            log.info("delivery of %d to %s failed: %s", item.index, target.id, exc)
            status, body = 0, b""
        except asyncio.CancelledError:
            # the instance left the list: give the item back at once, uncounted
            with contextlib.suppress(Exception):
                await asyncio.shield(self.svc.backend.release_consumer(INPUT, consumer))
            raise
        if 0 < status < 500:
            tags = {**item.tags, TAG_LAST_CODE: str(status), TAG_SOURCE_INDEX: str(item.index)}
            done = await self.svc.backend.complete(item.index, consumer, body, tags)
            if done is None:
                counters.duplicates += 1
            else:
                counters.completed += 1
                counters.last_activity = time.time()
                self.svc.notify(SINK)
            return
        state = await self.svc.backend.release(INPUT, item.index, consumer, self.svc.settings.max_delivery)
        if state == DEAD:
            counters.dead += 1
            log.warning(
                "request %s (index %d) is a dead letter after %d deliveries (last: %s)",
                item.request_id,
                item.index,
                item.deliveries,
                status or "no answer",
            )
        elif state:
            counters.retried += 1
            self.svc.notify(INPUT)

    async def _housekeeping(self) -> None:
        """Take back expired leases and drop results past their time to live."""
        while True:
            try:
                now = time.time()
                requeued, dead = await self.svc.backend.reap(INPUT, now, self.svc.settings.max_delivery)
                self.svc.counters.retried += requeued
                self.svc.counters.dead += dead
                s_requeued, _ = await self.svc.backend.reap(SINK, now, 1_000_000)
                expired = await self.svc.backend.expire(SINK, now - self.svc.settings.result_ttl_s)
                self.svc.counters.expired += expired
                if requeued:
                    self.svc.notify(INPUT)
                if s_requeued or expired:
                    self.svc.notify(SINK)
            except Exception as exc:
                log.warning("queue housekeeping failed (%s); trying again", type(exc).__name__)
            await asyncio.sleep(HOUSEKEEPING_S)
