"""`python -m openeas.queue --service NAME` (URLs in the environment): an Async service's queues.

The store URL (a PostgreSQL one holds a password) and the Redis URL (can hold one too) are read
from the environment, which is how the control plane passes them (`--store-url` / `--redis-url`
still override, for a person running it by hand): command lines are readable by every local user.

It serves the queue API (what the gateway routes `<endpoint>` and `<endpoint>/sink` to) on
`--port`, the operator endpoints (/metrics, /_queue/stats, /_queue/dead, /_queue/retry) on
`--admin-port` (loopback), dispatches the input queue to the service's ready instances, and
registers both addresses in the registry. It prints one JSON line when it listens:
{"port": P, "admin_port": A, "backend": "sql"|"redis"}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from openeas.config import REDIS_URL_ENV, STORE_URL_ENV
from openeas.queue import registration
from openeas.queue.backends import make_backend
from openeas.queue.dispatcher import Dispatcher, Target
from openeas.queue.http_api import BadQuery, QueueApi, error
from openeas.queue.items import INPUT, SINK
from openeas.queue.metrics import render, snapshot
from openeas.queue.service import QueueService, QueueSettings
from openeas.queue.wire import item_json
from openeas.spec import SpecError, parse_service_spec
from openeas.store import Registry

log = logging.getLogger("openeas.queue")
HEARTBEAT_S = 3.0
ALL = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m openeas.queue", description=__doc__.splitlines()[0])
    p.add_argument(
        "--store-url", default=None, help=f"the registry's database URL (default: ${STORE_URL_ENV})"
    )
    p.add_argument("--service", required=True, help="the Async service whose queues this serves")
    p.add_argument(
        "--redis-url",
        default=None,
        help=f"keep the queues in Redis (default: ${REDIS_URL_ENV}; neither: the registry's database)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="queue API port (0: any free one)")
    p.add_argument("--admin-port", type=int, default=0, help="operator endpoints port, on 127.0.0.1")
    args = p.parse_args(argv)
    if args.store_url is None:
        args.store_url = os.environ.get(STORE_URL_ENV)
        if not args.store_url:
            p.error(f"give the registry URL in ${STORE_URL_ENV} (or --store-url)")
    if args.redis_url is None:
        args.redis_url = os.environ.get(REDIS_URL_ENV, "")
    return args


def settings_for(registry: Registry, service: str) -> QueueSettings:
    rec = registry.get_service(service)
    spec = parse_service_spec(rec.spec)
    if not spec.is_async or spec.queue is None:
        raise SpecError.one(
            "metadata.type", f'service {service!r} is not asynchronous (metadata.type "Async")'
        )
    rpc = spec.metadata.rpc
    return QueueSettings.from_spec(service, spec.queue, rpc.worker_threads, rpc.keepalive)


def queue_app(api: QueueApi) -> Starlette:
    return Starlette(
        routes=[
            Route("/{path:path}", api.http, methods=ALL),
            WebSocketRoute("/{path:path}", api.watch),
        ]
    )


def admin_app(svc: QueueService, dispatcher: Dispatcher) -> Starlette:
    async def metrics(_: Request) -> Response:
        return PlainTextResponse(
            await render(svc, len(dispatcher.targets)), media_type="text/plain; version=0.0.4"
        )

    async def stats(_: Request) -> Response:
        return JSONResponse(await snapshot(svc, len(dispatcher.targets), dispatcher.in_flight))

    async def dead(request: Request) -> Response:
        limit = int(request.query_params.get("limit", "100"))
        items = await svc.backend.dead(INPUT, limit)
        return JSONResponse([item_json(i, with_state=True) for i in items])

    async def retry(request: Request) -> Response:
        body: dict[str, Any] = await request.json() if await request.body() else {}
        indexes = body.get("indexes")
        if indexes is not None and not (
            isinstance(indexes, list) and all(isinstance(i, int) for i in indexes)
        ):
            return error(400, "BadRequest", 'give {"indexes": [1, 2]} or nothing (retry every dead letter)')
        n = await svc.backend.retry_dead(INPUT, indexes)
        svc.notify(INPUT)
        return JSONResponse({"retried": n})

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/_queue/stats", stats),
            Route("/_queue/dead", dead),
            Route("/_queue/retry", retry, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace) -> int:
    registry = Registry(args.store_url)
    try:
        settings = await asyncio.to_thread(settings_for, registry, args.service)
    except (SpecError, KeyError) as exc:
        print(f"error: cannot serve the queues of {args.service!r}: {exc}", file=sys.stderr)
        return 2
    backend = make_backend(args.store_url, args.redis_url, args.service)
    svc = QueueService(settings, backend)

    async def list_targets() -> list[Target]:
        rows = await asyncio.to_thread(registry.list_instances, args.service)
        return [Target(r.id, r.host, r.port) for r in rows if r.state == "ready"]

    # One queue server per service: whatever is still claimed was held by a previous one that
    # died (SIGKILL, a crash); deliver it again now instead of when its lease runs out.
    far = time.time() + 1e9
    requeued, dead = await backend.reap(INPUT, far, settings.max_delivery)
    await backend.reap(SINK, far, 1 << 30)
    if requeued or dead:
        log.warning(
            "took back %d request(s) a previous queue server held (%d now dead letters)", requeued, dead
        )
    dispatcher = Dispatcher(svc, list_targets)
    api = QueueApi(svc)
    data_sock, admin_sock = _listen(args.host, args.port), _listen("127.0.0.1", args.admin_port)
    port, admin_port = data_sock.getsockname()[1], admin_sock.getsockname()[1]
    servers = [
        uvicorn.Server(
            uvicorn.Config(queue_app(api), log_level="warning", access_log=False, ws_ping_interval=None)
        ),
        uvicorn.Server(uvicorn.Config(admin_app(svc, dispatcher), log_level="warning", access_log=False)),
    ]
    for s in servers:
        s.install_signal_handlers = lambda: None  # type: ignore[attr-defined,method-assign]
    engine = registry.engine
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    await asyncio.to_thread(registration.create_table, engine)
    await asyncio.to_thread(
        registration.register,
        engine,
        args.service,
        f"http://{host}:{port}",
        f"http://127.0.0.1:{admin_port}",
        os.getpid(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(registration.heartbeat, engine, args.service, os.getpid())

    tasks = [
        asyncio.create_task(servers[0].serve(sockets=[data_sock])),
        asyncio.create_task(servers[1].serve(sockets=[admin_sock])),
        asyncio.create_task(dispatcher.run()),
        asyncio.create_task(heartbeat()),
    ]
    while not all(s.started for s in servers):
        await asyncio.sleep(0.02)
    backend_name = "redis" if args.redis_url else "sql"
    print(json.dumps({"port": port, "admin_port": admin_port, "backend": backend_name}), flush=True)
    log.info("queue server for %s on %s:%d (%s backend)", args.service, host, port, backend_name)
    await stop.wait()
    for s in servers:
        s.should_exit = True
    for t in tasks[2:]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(Exception):
        await asyncio.to_thread(registration.unregister, engine, args.service, os.getpid())
    await backend.close()
    registry.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    # our own messages at INFO; libraries' (httpx logs every request at INFO) at WARNING
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    args = parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        return asyncio.run(serve(args))
    except BadQuery as exc:  # pragma: no cover - only at start-up
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
