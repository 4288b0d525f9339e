"""An in-process `Gateway` for hot-path tests: no gateway process, no store, a snapshot in hand.

    with running_gateway(snapshot) as gw:     # a Gateway on its own event loop thread
        requests.get(gw.url("svc", "/echo"), headers=...)
        gw.install(new_snapshot)              # swap routes, as the store watcher would
        gw.call(lambda g: g.metrics_snapshot())

The gateway runs on uvloop in a background thread, exactly as `python -m openeas.gateway` runs it
(listeners on port 0, the metrics listener included); the test talks to it over real sockets and
reads or changes its state only on its loop (`call`). Instances are real processes
(`harness.start_upstream`). Start-up costs milliseconds, so a test can build the routes it needs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import uvloop

from openeas.gateway import Gateway
from openeas.gateway.snapshot import GatewaySettings, Listener, RoutingSnapshot, ServiceRoute, Upstream

T = TypeVar("T")


def settings(name: str = "inproc", max_body_bytes: int = 1024 * 1024, **more: object) -> GatewaySettings:
    """Settings with an Internet and an intranet listener on free loopback ports."""
    listeners = (Listener("internet", "127.0.0.1", 0), Listener("intranet", "127.0.0.1", 0))
    return GatewaySettings(name=name, listeners=listeners, max_body_bytes=max_body_bytes, **more)  # type: ignore[arg-type]


def route(name: str, token: str, ports: list[int], **more: object) -> ServiceRoute:
    """A running service whose ready instances listen on `ports` (127.0.0.1)."""
    ups = tuple(Upstream(f"{name}-{i}", "127.0.0.1", port) for i, port in enumerate(ports))
    return ServiceRoute(
        name=name, token=token.encode(), upstreams=ups, timeout_s=5.0, status="Running", **more
    )  # type: ignore[arg-type]


@dataclass
class InProcessGateway:
    gateway: Gateway
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[[Gateway], T], timeout: float = 10.0) -> T:
        """Run `fn(gateway)` on the gateway's loop and return its result."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(self.gateway))
            except BaseException as exc:  # handed to the caller
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout)

    def install(self, snapshot: RoutingSnapshot) -> None:
        self.call(lambda g: g.set_snapshot(snapshot))

    def port(self, kind: str = "internet") -> int:
        return next(lst.port for lst in self.gateway.bound if lst.kind == kind)

    def url(self, service: str, sub: str = "", kind: str = "internet") -> str:
        return f"http://127.0.0.1:{self.port(kind)}/api/predict/{service}{sub}"

    @property
    def metrics_address(self) -> str:
        bound = self.gateway.metrics_bound
        assert bound is not None
        return f"127.0.0.1:{bound.port}"


@contextmanager
def running_gateway(
    snapshot: RoutingSnapshot, gateway_settings: GatewaySettings | None = None
) -> Iterator[InProcessGateway]:
    """A started `Gateway` serving `snapshot` on a uvloop thread; stopped (gracefully) on exit."""
    loop = uvloop.new_event_loop()
    gateway = Gateway(gateway_settings or settings(), snapshot)
    started: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def serve() -> None:
        try:
            await gateway.start()
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(None)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
        loop.run_forever()

    thread = threading.Thread(target=run, name="inprocess-gateway", daemon=True)
    thread.start()
    try:
        started.result(10)
        yield InProcessGateway(gateway, loop)
    finally:
        if started.done() and started.exception() is None:
            asyncio.run_coroutine_threadsafe(gateway.stop(grace_s=2.0), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
