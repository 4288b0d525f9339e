"""SSE client for the bench: many concurrent streams over raw asyncio sockets.

`hold_streams` opens N streams (bounded connect concurrency), checks that each receives
events, and samples the gateway's memory before and with the streams open. `first_event_times`
measures time-to-first-event, one fresh connection at a time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

MAX_HEAD = 16 * 1024


def build_request(host: str, port: int, path: str, auth: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class StreamClient(asyncio.Protocol):
    """One SSE stream: sends the request, reads the status, counts events (blank-line ends)."""

    __slots__ = (
        "events",
        "first_event",
        "head",
        "head_done",
        "lost",
        "request",
        "status",
        "t_first",
        "t_start",
        "tail",
        "transport",
    )

    def __init__(self, request: bytes, first_event: asyncio.Future[float]) -> None:
        self.request = request
        self.first_event = first_event
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        self.status: int | None = None
        self.head = b""
        self.head_done = False
        self.tail = b""
        self.events = 0
        self.lost = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.head_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    self.close()
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.head_done = True
            self.head = b""
            try:
                self.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.status = 0
        if self.status != 200:
            self.close()  # counted as a failed stream; nothing more to read
            return
        buf = self.tail + data
        found = buf.count(b"\n\n")
        self.tail = buf[-1:]
        if found and self.events == 0:
            self.t_first = time.perf_counter()
            if not self.first_event.done():
                self.first_event.set_result(self.t_first - self.t_start)
        self.events += found

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        if not self.first_event.done():
            why = f"closed before the first event (status {self.status})"
            self.first_event.set_exception(ConnectionError(why))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _open_one(host: str, port: int, request: bytes, timeout: float) -> StreamClient:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[float] = loop.create_future()
    first.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)  # no "never retrieved"
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: StreamClient(request, first), host, port), timeout
    )
    return proto


async def first_event_times(
    host: str, port: int, path: str, auth: str, count: int, timeout: float = 5.0
) -> list[float]:
    """Time from connect() to the first complete event, one stream at a time (seconds)."""
    request = build_request(host, port, path, auth)
    out: list[float] = []
    for _ in range(count):
        t0 = time.perf_counter()
        proto = await _open_one(host, port, request, timeout)
        proto.t_start = t0
        try:
            await asyncio.wait_for(asyncio.shield(proto.first_event), timeout)
            assert proto.t_first is not None
            out.append(proto.t_first - t0)
        finally:
            proto.close()
    return out


@dataclass
class HoldResult:
    requested: int
    connected: int
    connect_failures: int
    status_200: int
    with_first_event: int
    with_two_events: int
    lost_early: int
    statuses: dict[str, int]
    open_seconds: float
    rss_before_kib: int
    rss_with_kib: int
    rss_with_later_kib: int
    rss_after_close_kib: int
    gateway_fds_with: int

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["statuses"] = dict(self.statuses)
        ok = max(1, self.with_two_events)
        d["kib_per_stream"] = (self.rss_with_kib - self.rss_before_kib) / ok
        return d


async def hold_streams(
    host: str,
    port: int,
    path: str,
    auth: str,
    n: int,
    rss: Callable[[], int],
    fds: Callable[[], int],
    concurrency: int = 200,
    hold_s: float = 3.0,
    timeout_s: float = 0.0,  # 0: 30 s + 1 s per 500 streams
) -> HoldResult:
    """Open n streams, wait until each has two events (bounded), sample rss, close them all."""
    request = build_request(host, port, path, auth)
    sem = asyncio.Semaphore(concurrency)
    failures = 0

    async def one() -> StreamClient | None:
        nonlocal failures
        for attempt in range(3):
            async with sem:
                try:
                    return await _open_one(host, port, request, 10.0)
                except (OSError, TimeoutError):
                    failures += 1
            await asyncio.sleep(0.05 * (attempt + 1))
        return None

    rss_before = rss()
    t0 = time.monotonic()
    opened = [s for s in await asyncio.gather(*(one() for _ in range(n))) if s is not None]
    # Bounded: 30 s plus 1 s per 500 streams for the first events, then the hold.
    deadline = time.monotonic() + (timeout_s or 30.0 + n / 500)
    try:
        while time.monotonic() < deadline:
            if all(s.lost or s.events >= 1 for s in opened):
                break
            await asyncio.sleep(0.2)
        open_seconds = time.monotonic() - t0
        # Hold: every stream should now get its per-second event through the gateway.
        hold_until = time.monotonic() + hold_s
        while time.monotonic() < deadline:
            if time.monotonic() >= hold_until and all(s.lost or s.events >= 2 for s in opened):
                break
            await asyncio.sleep(0.2)
        rss_with = rss()
        fds_with = fds()
        await asyncio.sleep(2.0)
        rss_later = rss()
        result = HoldResult(
            requested=n,
            connected=len(opened),
            connect_failures=failures,
            status_200=sum(1 for s in opened if s.status == 200),
            with_first_event=sum(1 for s in opened if s.events >= 1),
            with_two_events=sum(1 for s in opened if s.events >= 2),
            lost_early=sum(1 for s in opened if s.lost),
            statuses=dict(Counter("no answer" if s.status is None else str(s.status) for s in opened)),
            open_seconds=open_seconds,
            rss_before_kib=rss_before,
            rss_with_kib=rss_with,
            rss_with_later_kib=rss_later,
            rss_after_close_kib=0,
            gateway_fds_with=fds_with,
        )
    finally:
        for s in opened:
            s.close()
    await asyncio.sleep(1.5)
    result.rss_after_close_kib = rss()
    return result


def median_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6 if values else float("nan")
