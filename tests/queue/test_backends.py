"""The two queue backends keep one semantics: the same checks run on SQLite and on a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from openeas.queue.backend import QueueBackend
from openeas.queue.backends import make_backend
from openeas.queue.items import CLAIMED, DEAD, INPUT, READY, SINK, Limits, PayloadTooLarge, QueueFull
from openeas.store import sqlite_url

BIG = Limits(max_length=1000, max_payload_bytes=1 << 20)


def run(tmp_path: Path, redis_url: str, body: Callable[[QueueBackend], Awaitable[None]]) -> None:
    async def main() -> None:
        backend = make_backend(sqlite_url(tmp_path), redis_url, "svc")
        try:
            await body(backend)
        finally:
            await backend.close()

    asyncio.run(main())


def test_put_get_delete_truncate(tmp_path: Path, redis_url_for: str) -> None:
    async def body(b: QueueBackend) -> None:
        items = [await b.put(SINK, f"d{i}".encode(), {"k": str(i)}, 0, BIG) for i in range(5)]
        assert [i.index for i in items] == [1, 2, 3, 4, 5]
        assert len({i.request_id for i in items}) == 5
        got = await b.get(SINK, 2, 2)
        assert [(g.index, g.data, g.tags) for g in got] == [(2, b"d1", {"k": "1"}), (3, b"d2", {"k": "2"})]
        assert [g.index for g in await b.get(SINK, 0, 10, request_id=items[4].request_id)] == [5]
        assert await b.delete(SINK, [2, 3, 99]) == 2
        assert await b.truncate(SINK, 5) == 2  # 1 and 4
        st = await b.stats(SINK)
        assert (st.length, st.first_index, st.last_index) == (1, 5, 5)
        assert await b.length(SINK) == 1
        assert (await b.put(SINK, b"x", {}, 0, BIG)).index == 6  # indexes never go back
        await b.put(INPUT, b"y", {}, 0, BIG)
        await b.purge()  # the service was deleted: nothing of it stays
        assert (await b.length(SINK), await b.length(INPUT)) == (0, 0)
        assert (await b.put(SINK, b"new", {}, 0, BIG)).index == 1

    run(tmp_path, redis_url_for, body)


def test_limits_full_evict_and_payload(tmp_path: Path, redis_url_for: str) -> None:
    async def body(b: QueueBackend) -> None:
        small = Limits(max_length=2, max_payload_bytes=4)
        await b.put(INPUT, b"a", {}, 0, small)
        await b.put(INPUT, b"b", {}, 0, small)
        with pytest.raises(QueueFull):
            await b.put(INPUT, b"c", {}, 0, small)
        with pytest.raises(PayloadTooLarge):
            await b.put(INPUT, b"12345", {}, 0, small)
        evict = Limits(max_length=2, max_payload_bytes=4, auto_evict=True)
        await b.put(INPUT, b"c", {}, 0, evict)  # drops the oldest waiting item (a)
        assert [i.data for i in await b.get(INPUT, 0, 10)] == [b"b", b"c"]
        await b.claim(INPUT, "w", 2, 60)
        with pytest.raises(QueueFull):  # everything is in flight: nothing may be dropped
            await b.put(INPUT, b"d", {}, 0, evict)

    run(tmp_path, redis_url_for, body)


def test_claim_priority_window_and_exclusive(tmp_path: Path, redis_url_for: str) -> None:
    async def body(b: QueueBackend) -> None:
        for i in range(4):
            await b.put(INPUT, f"n{i}".encode(), {}, 0, BIG)
        await b.put(INPUT, b"urgent", {}, 1, BIG)
        first = await b.claim(INPUT, "a", 2, 60)
        assert [i.data for i in first] == [b"urgent", b"n0"]
        assert all(i.state == CLAIMED and i.deliveries == 1 for i in first)
        second = await b.claim(INPUT, "b", 10, 60)
        assert [i.data for i in second] == [b"n1", b"n2", b"n3"]
        assert await b.claim(INPUT, "c", 10, 60) == []
        st = await b.stats(INPUT)
        assert (st.length, st.in_flight) == (5, 5)
        # a consumer that goes away gives its items back, uncounted
        assert await b.release_consumer(INPUT, "b") == 3
        again = await b.claim(INPUT, "c", 10, 60, start=3)
        assert [(i.data, i.deliveries) for i in again] == [(b"n2", 1), (b"n3", 1)]

    run(tmp_path, redis_url_for, body)


def test_complete_once_release_dead_retry(tmp_path: Path, redis_url_for: str) -> None:
    async def body(b: QueueBackend) -> None:
        put = await b.put(INPUT, b"job", {"t": "1"}, 0, BIG)
        [item] = await b.claim(INPUT, "a", 1, 60)
        done = await b.complete(item.index, "a", b"result", {"lastCode": "200"})
        assert done is not None and done.request_id == put.request_id and done.data == b"result"
        assert await b.complete(item.index, "a", b"again", {}) is None  # exactly one result
        assert (await b.stats(INPUT)).length == 0
        assert [i.data for i in await b.get(SINK, 0, 10)] == [b"result"]

        await b.put(INPUT, b"flaky", {}, 0, BIG)
        for attempt in (1, 2):
            [it] = await b.claim(INPUT, "w", 1, 60)
            assert it.deliveries == attempt
            assert await b.release(INPUT, it.index, "w", max_delivery=2) == (READY if attempt == 1 else DEAD)
        assert await b.claim(INPUT, "w", 1, 60) == []
        dead = await b.dead(INPUT, 10)
        assert [d.data for d in dead] == [b"flaky"]
        assert (await b.stats(INPUT)).dead == 1
        assert await b.get(INPUT, 0, 10) == []  # dead letters are not in the queue
        # a refused connection is not a try
        assert await b.retry_dead(INPUT, None) == 1
        [it] = await b.claim(INPUT, "w", 1, 60)
        assert await b.release(INPUT, it.index, "w", max_delivery=1, count=False) == READY
        [it] = await b.claim(INPUT, "w", 1, 60)
        assert it.deliveries == 1
        assert await b.release(INPUT, it.index, "other", max_delivery=1) == ""  # not held by "other"

    run(tmp_path, redis_url_for, body)


def test_leases_expire_and_results_age_out(tmp_path: Path, redis_url_for: str) -> None:
    async def body(b: QueueBackend) -> None:
        await b.put(INPUT, b"a", {}, 0, BIG)
        await b.put(INPUT, b"b", {}, 0, BIG)
        await b.claim(INPUT, "gone", 1, 0.05)
        await b.claim(INPUT, "alive", 1, 60)
        await asyncio.sleep(0.1)
        assert await b.reap(INPUT, time.time(), max_delivery=5) == (1, 0)
        [again] = await b.claim(INPUT, "next", 1, 60)
        assert (again.data, again.deliveries) == (b"a", 2)
        await b.put(SINK, b"old", {}, 0, BIG)
        cut = time.time()
        await asyncio.sleep(0.02)
        await b.put(SINK, b"new", {}, 0, BIG)
        assert await b.expire(SINK, cut) == 1
        assert [i.data for i in await b.get(SINK, 0, 10)] == [b"new"]
        st = await b.stats(INPUT)
        assert st.oldest_created_at is None  # nothing waits: both are in flight

    run(tmp_path, redis_url_for, body)
