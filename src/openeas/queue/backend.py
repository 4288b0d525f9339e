"""The queue backend interface: one semantics, two stores (SQL and Redis).

A backend holds the two queues (`input`, `sink`) of one Async service. Every method is one atomic
step, so several queue servers (several machines, one Redis or one PostgreSQL) may share a
service's queues: a claimed item belongs to exactly one consumer until it is committed, released,
or its lease runs out. tests/queue/test_backends.py runs the same checks on both.
"""

from __future__ import annotations

from typing import Protocol

from openeas.queue.items import Item, Limits, QueueStats


class QueueBackend(Protocol):
    async def put(
        self,
        queue: str,
        data: bytes,
        tags: dict[str, str],
        priority: int,
        limits: Limits,
        request_id: str | None = None,
    ) -> Item:
        """Append an item (index = last index + 1); QueueFull/PayloadTooLarge when over the limits.
        With limits.auto_evict a full queue drops its oldest waiting item instead."""

    async def get(self, queue: str, index: int, length: int, request_id: str | None = None) -> list[Item]:
        """Up to `length` items (waiting or in flight) from `index` on, or the one with `request_id`."""

    async def search(self, queue: str, index: int) -> Item | None:
        """The item at `index` in any state (dead letters too)."""

    async def delete(self, queue: str, indexes: list[int]) -> int:
        """Remove these items whatever their state; returns how many existed."""

    async def truncate(self, queue: str, before: int) -> int:
        """Remove every item with an index below `before`."""

    async def claim(self, queue: str, consumer: str, n: int, lease_s: float, start: int = 0) -> list[Item]:
        """Take up to n waiting items (priority first, then oldest) with index >= start for
        `consumer` until now + lease_s; each take counts one delivery."""

    async def release(
        self, queue: str, index: int, consumer: str, max_delivery: int, count: bool = True
    ) -> str:
        """Give back an item `consumer` holds (a failed try): waiting again, or dead when it has
        had max_delivery deliveries. With count=False the delivery never happened (the instance
        refused the connection): it is taken off the item's count. Returns the new state, or ""
        when the consumer no longer holds it."""

    async def release_consumer(self, queue: str, consumer: str) -> int:
        """Give back everything `consumer` holds, without counting a failure (it went away)."""

    async def complete(self, index: int, consumer: str, data: bytes, tags: dict[str, str]) -> Item | None:
        """In one step: if `consumer` still holds input item `index`, append the result to the
        sink (with the input's request id) and remove the input item. Returns the sink item, or
        None when someone else already completed it (a duplicate delivery)."""

    async def reap(self, queue: str, now: float, max_delivery: int) -> tuple[int, int]:
        """Items whose lease ran out go back to waiting (or dead): (requeued, dead)."""

    async def expire(self, queue: str, older_than: float) -> int:
        """Remove items created before `older_than` (results past their time to live)."""

    async def stats(self, queue: str) -> QueueStats: ...

    async def length(self, queue: str) -> int:
        """Items waiting or in flight (what `max_length` bounds); cheaper than stats()."""

    async def dead(self, queue: str, limit: int) -> list[Item]: ...

    async def retry_dead(self, queue: str, indexes: list[int] | None) -> int:
        """Dead letters (these, or all) wait again with their delivery count reset."""

    async def purge(self) -> None:
        """Remove both queues of the service, indexes included (the service was deleted)."""

    async def close(self) -> None: ...
