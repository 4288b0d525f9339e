"""The queue HTTP and WebSocket API, as `eas_prediction.QueueClient` speaks it.

Paths: `/` is the input queue and `/sink` the output queue (the gateway strips
`/api/predict/<service>`; a direct caller may keep it). Verbs and query parameters:

  POST   body + tags in the query (`_priority_=1` jumps the line) -> the index as text, header
         X-Eas-Queueservice-Request-Id; 429 when full, 413 when the body is over the limit
  GET    `_attrs_=true` -> JSON attributes; `_search_=true&_index_=N` -> JSON about one item;
         else items from `_index_` (`_length_`, default 1), or the one with `requestId`, waiting
         up to `_timeout_` (like "5s"); `_auto_delete_` removes what it returns; `_raw_=true`
         answers the first item's bytes; 204 when nothing came. Protobuf when Accept asks for
         it (the SDK does), else JSON with base64 data.
  DELETE `_indexes_=1,2` deletes; `_trunc_=true&_index_=N` drops everything below N
  PUT    `_indexes_=1,2` commits (the items are done and go away)
  WS     `_watch_=true&_index_&_window_&_index_only_&_auto_commit_`: a stream of protobuf frames,
         at most `_window_` uncommitted at a time; what a closed watcher held is delivered again.

Every choice the SDK and EAS's docs leave open is listed in docs/async.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from openeas.queue.items import INPUT, SINK, TAG_PRIORITY, Item, PayloadTooLarge, QueueFull
from openeas.queue.service import QueueService
from openeas.queue.wire import PROTOBUF_TYPE, encode_frame, encode_frame_list, item_json
from openeas.spec.queue import duration_seconds

HEADER_REQUEST_ID = "X-Eas-Queueservice-Request-Id"
RESERVED = {
    "_index_",
    "_length_",
    "_timeout_",
    "_auto_delete_",
    "_raw_",
    "requestId",
    "_attrs_",
    "_search_",
    "_indexes_",
    "_trunc_",
    "_watch_",
    "_window_",
    "_index_only_",
    "_auto_commit_",
    TAG_PRIORITY,
}
MAX_GET_LENGTH = 1000
MAX_GET_TIMEOUT_S = 60.0
WATCH_LEASE_S = 600.0  # a watcher holds items until it commits or goes away; this bounds a crash


class BadQuery(ValueError):
    pass


def queue_of(path: str, service: str) -> str | None:
    """Which queue a request path names, or None for an unknown path."""
    prefix = f"/api/predict/{service}"
    if path.startswith(prefix):
        path = path[len(prefix) :]
    path = path.rstrip("/")
    if path == "":
        return INPUT
    if path == "/sink":
        return SINK
    return None


def _int(q: Any, name: str, default: int, low: int = 0) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number, got {raw!r}") from None
    if value < low:
        raise BadQuery(f"{name} must be {low} or more, got {value}")
    return value


def _bool(q: Any, name: str, default: bool) -> bool:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise BadQuery(f"{name} must be true or false, got {raw!r}")


def _indexes(q: Any) -> list[int]:
    raw = q.get("_indexes_", "")
    try:
        out = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise BadQuery(f"_indexes_ is a comma-separated list of indexes, got {raw!r}") from None
    if not out:
        raise BadQuery("give the items as _indexes_=1,2,3")
    return out


def _tags(q: Any) -> dict[str, str]:
    return {k: v for k, v in q.items() if k not in RESERVED}


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


class QueueApi:
    """The request handlers; `app.py` mounts them."""

    def __init__(self, svc: QueueService):
        self.svc = svc

    async def http(self, request: Request) -> Response:
        queue = queue_of(request.url.path, self.svc.settings.service)
        if queue is None:
            return error(
                404,
                "NotFound",
                f"no queue at {request.url.path}; use the service endpoint or <endpoint>/sink",
            )
        try:
            return await self._dispatch(request, queue)
        except BadQuery as exc:
            return error(400, "BadRequest", str(exc))

    async def _dispatch(self, request: Request, queue: str) -> Response:
        q = request.query_params
        method = request.method
        if method == "POST":
            return await self._put(request, queue)
        if method == "GET":
            if _bool(q, "_attrs_", False):
                return JSONResponse(await self.attributes(queue))
            if _bool(q, "_search_", False):
                return await self._search(queue, _int(q, "_index_", 0, low=1))
            if _bool(q, "_watch_", False):
                return error(400, "BadRequest", "_watch_ needs a WebSocket connection (ws:// or wss://)")
            return await self._get(request, queue)
        if method == "DELETE":
            if _bool(q, "_trunc_", False):
                n = await self.svc.backend.truncate(queue, _int(q, "_index_", 0))
                self.svc.notify(queue)
                return PlainTextResponse(f"truncated {n}")
            n = await self.svc.remove(queue, _indexes(q))
            return PlainTextResponse(f"deleted {n}")
        if method == "PUT":
            n = await self.svc.remove(queue, _indexes(q))
            return PlainTextResponse(f"committed {n}")
        return error(
            405, "MethodNotAllowed", f"{method} is not a queue operation; use GET, POST, PUT or DELETE"
        )

    async def _put(self, request: Request, queue: str) -> Response:
        q = request.query_params
        priority = 1 if _int(q, TAG_PRIORITY, 0) > 0 else 0
        body = await request.body()
        try:
            item = await self.svc.put(queue, body, _tags(q), priority)
        except QueueFull as exc:
            self.svc.counters.rejected_full += 1
            which = "source" if queue == INPUT else "sink"
            return error(
                429,
                "QueueFull",
                f"the {queue} queue of service {self.svc.settings.service!r} is full "
                f"({exc.max_length} items, queue.{which}.max_length); retry later or raise the limit",
            )
        except PayloadTooLarge as exc:
            which = "source" if queue == INPUT else "sink"
            return error(
                413, "PayloadTooLarge", f"{exc}; raise queue.{which}.max_payload_size_kb to send more"
            )
        return PlainTextResponse(str(item.index), headers={HEADER_REQUEST_ID: item.request_id})

    async def _get(self, request: Request, queue: str) -> Response:
        q = request.query_params
        try:
            timeout = min(duration_seconds(q.get("_timeout_") or "0"), MAX_GET_TIMEOUT_S)
        except ValueError as exc:
            raise BadQuery(f"_timeout_: {exc}") from None
        items = await self.svc.get_wait(
            queue,
            _int(q, "_index_", 0),
            min(_int(q, "_length_", 1, low=1), MAX_GET_LENGTH),
            q.get("requestId") or None,
            timeout,
            _tags(q),
        )
        if not items:
            return Response(status_code=204)
        if _bool(q, "_auto_delete_", True):
            await self.svc.remove(queue, [i.index for i in items])
        if _bool(q, "_raw_", False):
            first = items[0]
            return Response(
                first.data,
                headers={HEADER_REQUEST_ID: first.request_id, "X-Eas-Queueservice-Index": str(first.index)},
            )
        if PROTOBUF_TYPE in request.headers.get("accept", ""):
            return Response(encode_frame_list(items), media_type=PROTOBUF_TYPE)
        return JSONResponse([item_json(i) for i in items])

    async def _search(self, queue: str, index: int) -> Response:
        item = await self.svc.backend.search(queue, index)
        if item is None:
            return error(404, "NotFound", f"no item {index} in the {queue} queue")
        st = await self.svc.backend.stats(queue)
        ahead = max(0, index - st.first_index) if item.state == "ready" else 0
        return JSONResponse(
            {
                "index": item.index,
                "requestId": item.request_id,
                "state": item.state,
                "consumer": item.consumer,
                "deliveries": item.deliveries,
                "priority": item.priority,
                "position": ahead,
                "createdAt": item.created_at,
            }
        )

    async def attributes(self, queue: str) -> dict[str, str]:
        st = await self.svc.backend.stats(queue)
        limits = self.svc.settings.limits(queue)
        return {
            "meta.name": f"{self.svc.settings.service}" + ("/sink" if queue == SINK else ""),
            "meta.maxPayloadBytes": str(limits.max_payload_bytes),
            "stream.length": str(st.length),
            "stream.maxLength": str(limits.max_length),
            "stream.firstEntry": str(st.first_index),
            "stream.lastEntry": str(st.last_index),
            "stream.inFlight": str(st.in_flight),
            "stream.dead": str(st.dead),
            "stream.oldestAgeSeconds": f"{time.time() - st.oldest_created_at:.3f}"
            if st.oldest_created_at
            else "0",
        }

    # -- watch -----------------------------------------------------------------------------
    async def watch(self, ws: WebSocket) -> None:
        queue = queue_of(ws.url.path, self.svc.settings.service)
        q = ws.query_params
        try:
            if queue is None:
                raise BadQuery(f"no queue at {ws.url.path}")
            start = _int(q, "_index_", 0)
            window = _int(q, "_window_", 1, low=1)
            index_only = _bool(q, "_index_only_", False)
            auto_commit = _bool(q, "_auto_commit_", False)
        except BadQuery as exc:
            await ws.close(code=1008, reason=str(exc)[:120])
            return
        await ws.accept()
        consumer = f"watch:{uuid.uuid4().hex[:12]}"
        closed = asyncio.Event()
        reader = asyncio.create_task(self._read_until_closed(ws, closed))
        held: set[int] = set()
        try:
            while not closed.is_set():
                if held:
                    held = await self._still_held(queue, held, consumer)
                free = window - len(held)
                items: list[Item] = []
                if free > 0:
                    items = await self.svc.backend.claim(queue, consumer, free, WATCH_LEASE_S, start)
                for item in items:
                    frame = Item(
                        item.index,
                        item.request_id,
                        b"" if index_only else item.data,
                        item.tags,
                        item.priority,
                        item.created_at,
                    )
                    await ws.send_bytes(encode_frame(frame))
                    if auto_commit:
                        await self.svc.remove(queue, [item.index])
                    else:
                        held.add(item.index)
                if not items:
                    await self.svc.wait_change(queue, 1.0)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if await self.svc.backend.release_consumer(queue, consumer):
                self.svc.notify(queue)

    async def _still_held(self, queue: str, held: set[int], consumer: str) -> set[int]:
        out = set()
        for index in held:
            item = await self.svc.backend.search(queue, index)
            if item is not None and item.consumer == consumer:
                out.add(index)
        return out

    @staticmethod
    async def _read_until_closed(ws: WebSocket, closed: asyncio.Event) -> None:
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            closed.set()
