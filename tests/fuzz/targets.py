"""Fuzz targets: the gateway's request path (parse + framing + admission) and spec parsing.

`request_target(data)` feeds `data` (split in two reads at a point the data chooses) to a real
`ClientConnection` of a real, not started `Gateway` (its loop is a fresh event loop the target runs
for a moment), whose only service has no ready instance, so every request ends in an answer of the
gateway's own (400/401/404/408/413/414/417/431/501/503 ...) and nothing leaves the process. The
connection's transport is `MemoryTransport`, which keeps what the gateway writes. A crash is:
an exception out of the connection, a request handler error logged by the gateway (an exception
inside a parser callback), or output that is not a sequence of well-formed HTTP/1.1 responses.

`spec_target(data)`: `parse_service_spec` over the JSON in `data` must return a spec or raise
SpecError, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import httptools

from openeas.gateway.bounds import ClientBounds
from openeas.gateway.client_connection import ClientConnection
from openeas.gateway.gateway import Gateway
from openeas.gateway.snapshot import GatewaySettings, Listener, RoutingSnapshot, ServiceRoute
from openeas.spec import SpecError
from openeas.spec.service import parse_service_spec


class MemoryTransport(asyncio.Transport):
    """A transport that keeps what is written to it (the fuzz target has no socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default


class _Bug(logging.Handler):
    """Collects the gateway's 'error while handling a request' warnings: an exception in a callback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "error while handling" in record.getMessage():
            self.records.append(record.getMessage())


class _Responses:
    def __init__(self) -> None:
        self.count = 0
        self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        self.count += 1


class RequestTarget:
    """One gateway and loop reused across inputs (a fresh connection per input)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        listeners = (Listener("internet", "127.0.0.1", 0),)
        bounds = ClientBounds(max_head_bytes=4096, max_header_count=16)
        settings = GatewaySettings(name="fuzz", listeners=listeners, max_body_bytes=1024, bounds=bounds)
        route = ServiceRoute(name="svc", token=b"tok", upstreams=(), timeout_s=1.0, status="Stopped")
        self.gateway = Gateway(settings, RoutingSnapshot(1, {"svc": route}))
        self.gateway._loop = self.loop  # not started: no listener, the target feeds bytes itself
        self.bug = _Bug()
        logging.getLogger("openeas.gateway").addHandler(self.bug)

    def __call__(self, data: bytes) -> None:
        split = data[0] if data else 0
        body = data[1:]
        conn = ClientConnection(self.gateway, "internet")
        transport = MemoryTransport()
        conn.connection_made(transport)
        cut = min(split, len(body))
        conn.data_received(body[:cut])
        if not transport.closed:
            conn.data_received(body[cut:])
        self.loop.run_until_complete(asyncio.sleep(0))  # run what was scheduled (pipelined starts)
        conn.sweep(self.loop.time() + 3600.0)  # every time bound expires
        self.loop.run_until_complete(asyncio.sleep(0))
        conn.connection_lost(None)
        if self.bug.records:
            raise AssertionError(f"a callback raised: {self.bug.records[0]}")
        out = bytes(transport.out)
        responses = _Responses()
        try:
            responses.parser.feed_data(out)
        except httptools.HttpParserError as exc:
            raise AssertionError(f"the gateway wrote something that is not HTTP: {out[:300]!r}") from exc
        if out and not out.endswith(b"}") and not out.endswith(b"\r\n\r\n"):
            raise AssertionError(f"a cut answer: {out[-200:]!r}")


# field names of service specs, so that built documents reach the validators behind them
SPEC_KEYS = (
    "name",
    "processor",
    "model_path",
    "model_entry",
    "model_config",
    "metadata",
    "instance",
    "cpu",
    "memory",
    "gpu",
    "rpc",
    "keepalive",
    "worker_threads",
    "max_queue_size",
    "rate_limit",
    "containers",
    "image",
    "command",
    "port",
    "script",
    "env",
    "autoscaler",
    "min",
    "max",
    "scaleStrategies",
    "metricName",
    "threshold",
    "networking",
    "gateway_policy",
    "enable",
    "limit",
    "concurrency_limit",
    "mirror",
    "group",
    "storage",
    "mount_path",
    "oss",
    "path",
    "health_check",
    "resource",
    "workspace",
)


def _build(fdp: Any, depth: int) -> Any:
    kind = fdp.ConsumeIntInRange(0, 6) if depth < 4 else fdp.ConsumeIntInRange(0, 4)
    if kind == 0:
        return fdp.ConsumeIntInRange(-(2**40), 2**40)
    if kind == 1:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
    if kind == 2:
        return fdp.ConsumeRegularFloat()
    if kind == 3:
        return fdp.ConsumeBool()
    if kind == 4:
        return None
    if kind == 5:
        return [_build(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {
        fdp.PickValueInList(list(SPEC_KEYS)): _build(fdp, depth + 1)
        for _ in range(fdp.ConsumeIntInRange(0, 5))
    }


def spec_target(data: bytes) -> None:
    """JSON documents as they are (the seed corpus), else a document built from the bytes."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        import atheris  # only the fuzzer runs this branch

        fdp = atheris.FuzzedDataProvider(data)
        doc = {
            fdp.PickValueInList(list(SPEC_KEYS)): _build(fdp, 1) for _ in range(fdp.ConsumeIntInRange(1, 6))
        }
    with contextlib.suppress(SpecError):
        parse_service_spec(doc)
