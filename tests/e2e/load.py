"""Steady open-loop load for traffic tests: N requests per second for D seconds, every result kept.

Open loop (requests start on a clock, not when the previous one ends) so a slow or failing
instance shows up as failures or latency instead of quietly lowering the rate. Each result
records when it started and ended, its status (0 = no HTTP answer) and the error or body text
of a non-200, so a test can say which requests failed and when. Request i carries the header
`X-Load-Id: i` (its `Result.rid`), so a test app can say which requests it saw.

    with SteadyLoad(url, token, rate=200, seconds=20) as load:   # starts in a thread
        ... change something under load ...
        load.stop()              # optional: end the plan now (`planned` = what was started)
    report = load.report()                                        # waits for the end
    assert report.failures == [], report.describe()
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

import httpx


@dataclass(frozen=True)
class Result:
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    detail: str  # body (first 200 chars) or error for a non-200, "" for a 200
    rid: int = -1  # the X-Load-Id header it was sent with
    body: str = ""  # the 200 answer's body, when the load was told to keep bodies


@dataclass
class LoadReport:
    results: list[Result] = field(default_factory=list)
    planned: int = 0
    rate: float = 0.0  # asked for
    t0: float = 0.0  # when request 0 was due (time.monotonic())

    @property
    def achieved_rate(self) -> float:
        """Requests started per second, first to last start."""
        if len(self.results) < 2:
            return 0.0
        span = self.results[-1].started - self.results[0].started
        return (len(self.results) - 1) / span if span > 0 else 0.0

    @property
    def max_lag(self) -> float:
        """The latest any request started after it was due: the generator fell behind by this."""
        return max((r.started - (self.t0 + r.rid / self.rate) for r in self.results), default=0.0)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status != 200]

    @property
    def by_status(self) -> Counter[int]:
        return Counter(r.status for r in self.results)

    def describe(self) -> str:
        fails = self.failures
        lines = [
            f"{len(self.results)} of {self.planned} requests done, by status {dict(self.by_status)}; "
            f"{self.achieved_rate:.0f} req/s started (asked {self.rate:g}), "
            f"max lag {self.max_lag * 1000:.0f} ms"
        ]
        t0 = self.results[0].started if self.results else 0.0
        for r in fails[:10]:
            lines.append(f"  #{r.rid} at +{r.started - t0:.2f}s: {r.status} {r.detail}")
        return "\n".join(lines)


class SteadyLoad:
    """`rate` requests per second to `url` for `seconds`, POSTing `body` (GET when None)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        rate: float = 200.0,
        seconds: float = 20.0,
        body: bytes | None = b"{}",
        timeout_s: float = 10.0,
        max_connections: int = 64,
        keep_bodies: bool = False,
    ) -> None:
        self.url = url
        self.headers = {"Authorization": token} if token else {}
        self.rate = rate
        self.seconds = seconds
        self.body = body
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.keep_bodies = keep_bodies
        self._report = LoadReport(planned=int(rate * seconds), rate=rate)
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)
        self._error: BaseException | None = None
        self._halt = threading.Event()

    def start(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __enter__(self) -> SteadyLoad:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:  # the test failed under load: do not keep it waiting for the plan
            self.stop()
        self._thread.join(timeout=self.seconds + self.timeout_s + 30)

    def report(self) -> LoadReport:
        self._thread.join(timeout=self.seconds + self.timeout_s + 30)
        if self._error is not None:
            raise RuntimeError(f"the load generator itself failed: {self._error!r}") from self._error
        self._report.results.sort(key=lambda r: r.started)
        return self._report

    def stop(self) -> None:
        """Start no more requests (those started finish): the plan ends here, so `planned` is
        what was started. For a test that runs load "until something is over"."""
        self._halt.set()

    @property
    def done_so_far(self) -> int:
        return len(self._report.results)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by report()
            self._error = exc

    async def _main(self) -> None:
        n = self.max_connections
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=self.timeout_s) as client:
            tasks = []
            start = self._report.t0 = time.monotonic()
            for i in range(self._report.planned):
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._halt.is_set():
                    self._report.planned = i
                    break
                tasks.append(asyncio.create_task(self._one(client, i)))
            await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, rid: int) -> None:
        started = time.monotonic()
        headers = {**self.headers, "X-Load-Id": str(rid)}
        try:
            if self.body is None:
                resp = await client.get(self.url, headers=headers)
            else:
                resp = await client.post(self.url, headers=headers, content=self.body)
            ok = resp.status_code == 200
            body = resp.text if ok and self.keep_bodies else ""
            detail = "" if ok else resp.text[:200]
            result = Result(started, time.monotonic(), resp.status_code, detail, rid, body)
        except httpx.HTTPError as exc:
            result = Result(started, time.monotonic(), 0, f"{type(exc).__name__}: {exc}"[:200], rid)
        self._report.results.append(result)  # list.append is atomic; one event loop thread
