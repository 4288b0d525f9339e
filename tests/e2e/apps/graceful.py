"""A slow-ish echo service that stops the way real servers do, and keeps a trace of requests.

uvicorn runs it: on SIGTERM it stops accepting, closes idle keep-alive connections, lets the
requests in flight finish and exits. Every request but /health sleeps `$DELAY_S` (default
0.03) and answers `{"instance", "pid", "version": $VERSION}`.

With `$TRACE_DIR` set, it appends to `$TRACE_DIR/<instance id>.trace` one line per event:
`P <pid>` at start, `S <id>` when a request starts and `F <id>` when its response was handed
to the connection, where <id> is the request's `X-Load-Id` header (tests/e2e/load.py sends it).
A test that kills the instance can then tell which requests were in flight on it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

DELAY_S = float(os.environ.get("DELAY_S", "0.03"))
INSTANCE = os.environ.get("OPENEAS_INSTANCE_ID", "")
VERSION = os.environ.get("VERSION", "")


def open_trace() -> int | None:
    folder = os.environ.get("TRACE_DIR")
    if not folder:
        return None
    return os.open(os.path.join(folder, f"{INSTANCE}.trace"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


class App:
    def __init__(self) -> None:
        self.trace = open_trace()
        self.note(f"P {os.getpid()}")

    def note(self, line: str) -> None:
        if self.trace is not None:
            os.write(self.trace, (line + "\n").encode())  # one write per line: O_APPEND keeps it whole

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/health":
            await self.answer(send, {"ok": True})
            return
        rid = dict(scope["headers"]).get(b"x-load-id", b"-").decode()
        self.note(f"S {rid}")
        await asyncio.sleep(DELAY_S)
        await self.answer(send, {"instance": INSTANCE, "pid": os.getpid(), "version": VERSION})
        self.note(f"F {rid}")

    @staticmethod
    async def answer(send: Callable[[dict[str, Any]], Awaitable[None]], payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    uvicorn.run(
        App(),
        host=os.environ.get("HOST") or "127.0.0.1",  # the Ray runtime sets HOST: the node's address
        port=int(os.environ["PORT"]),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
