"""One request through the gateway: route -> auth -> limits -> pick instance -> proxy -> log.

An `Exchange` is created by the client connection (server.py) when a request's head has been
parsed. It owns everything about that request: the checks, the instance it goes to (or the
instance queue it waits in), streaming the request body up and the response back (with flow
control both ways), the keepalive timer and the access log line. It is driven by callbacks only;
a task exists only while a new connection to an instance is being opened.
"""

from __future__ import annotations

import asyncio
import json
import re
from time import perf_counter
from typing import TYPE_CHECKING

from openeas.gateway import errors
from openeas.gateway.auth import is_authorized
from openeas.gateway.balancer import RouteEntry, UpstreamState, pick
from openeas.gateway.flow import PAUSE_BUFFER, PAUSE_UPSTREAM
from openeas.gateway.limits import ServiceLimits
from openeas.gateway.routing import path_of, split_target
from openeas.gateway.upstream import UpstreamConnection, release, take_idle

if TYPE_CHECKING:
    from openeas.gateway.metrics import ServiceStats
    from openeas.gateway.mirror import MirrorCopy
    from openeas.gateway.server import ClientConnection

# request header handling, by lower-case name
_DROP = 0  # hop-by-hop or re-written by the gateway
_AUTH = 1
_LENGTH = 2
_TE = 3
_EXPECT = 4
_CONNECTION = 5
_XFF = 6
_HOST = 7
_REQ_SPECIAL: dict[bytes, int] = {
    b"authorization": _AUTH,
    b"content-length": _LENGTH,
    b"transfer-encoding": _TE,
    b"expect": _EXPECT,
    b"connection": _CONNECTION,
    b"x-forwarded-for": _XFF,
    b"host": _HOST,
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"proxy-authorization": _DROP,
    b"proxy-authenticate": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"upgrade": _DROP,
    b"x-request-id": _DROP,
}
# response headers the gateway does not pass on (it frames the body and adds X-Request-Id)
_RESP_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
        b"transfer-encoding",
        b"x-request-id",
    }
)
_CONNECTION_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade"})
_REPLAYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_NOT_ALLOWED = frozenset({b"TRACE", b"CONNECT", b"TRACK"})
MAX_ATTEMPTS = 3
_HOST_RE = re.compile(rb"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
PENDING_HIGH_WATER = 256 * 1024  # body bytes buffered before an instance connection is ready
CRLF = b"\r\n"
DISCOVERY_PREFIXES = (
    b"/api/v1/servicediscovery/upstreams/",
    b"/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/",
)
LAST_CHUNK = b"0\r\n\r\n"

# response phases
QUEUED = 0  # parsed, waiting for an earlier pipelined request to finish
WAITING = 1  # sent (or being sent) upstream, no response byte to the client yet
STREAMING = 2  # response head written, body streaming
DONE = 3  # response complete (or the connection is being torn down)


class Exchange:
    __slots__ = (
        "attempts",
        "authorization",
        "body_chunked",
        "body_in",
        "bytes_out",
        "client",
        "connect_task",
        "connect_timer",
        "content_length",
        "corked",
        "counted",
        "deadline",
        "discard",
        "entry",
        "expect_continue",
        "extra_drop",
        "finished",
        "forced",
        "fwd",
        "has_host",
        "head",
        "headers",
        "headers_done",
        "held",
        "http10",
        "keep_alive",
        "method",
        "mirror",
        "own_answer",
        "pending",
        "pending_size",
        "phase",
        "queued",
        "req_done",
        "request_id",
        "resp_chunked",
        "resp_close",
        "resp_head",
        "service",
        "state",
        "stats",
        "status",
        "t0",
        "t_resp",
        "t_sent",
        "t_start",
        "target",
        "timer",
        "tried",
        "up",
        "up_addr",
        "up_until_close",
        "url",
        "xff",
    )

    def __init__(self, client: ClientConnection, t0: float) -> None:
        self.client = client
        self.t0 = t0  # loop time: deadlines
        self.t_start = perf_counter()  # metrics and the access log (loop time has ms resolution)
        self.t_sent = 0.0  # first sent to an instance
        self.t_resp = 0.0  # the instance's response complete
        self.stats: ServiceStats | None = None  # its service's metrics, while routed (in flight)
        self.own_answer = False  # answered by the gateway itself (not relayed from an instance)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.method = b""
        self.http10 = False
        self.keep_alive = True
        self.request_id = b""
        self.authorization: bytes | None = None
        self.content_length = -1
        self.body_chunked = False
        self.expect_continue = False
        self.xff: bytes | None = None
        self.has_host = False
        self.extra_drop: list[bytes] | None = None
        self.fwd: list[bytes] = []
        self.forced: tuple[int, str, bool] | None = None  # (status, message, close) decided early
        self.req_done = False
        self.body_in = 0
        self.discard = False
        self.pending: list[bytes] | None = None
        self.pending_size = 0
        self.corked = False  # attached upstream, but writes held in `pending` until flush_up
        self.entry: RouteEntry | None = None
        self.service = b""
        self.target = b""
        self.head = b""
        self.deadline = 0.0
        self.state: UpstreamState | None = None  # the instance this request is assigned to
        self.queued = False  # waiting in `state.waiting` for a free slot
        self.held = False  # waiting for the service's first instance (scale from zero, app.py)
        self.mirror: MirrorCopy | None = None  # this request's body being copied (mirror.py)
        self.counted: ServiceLimits | None = None  # holds one of the service's concurrency slots
        self.up: UpstreamConnection | None = None
        self.up_addr = ""
        self.tried: list[UpstreamState] | None = None
        self.attempts = 0
        self.connect_task: asyncio.Task[None] | None = None
        self.connect_timer: asyncio.TimerHandle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.phase = QUEUED
        self.status = 0
        self.resp_chunked = False
        self.resp_close = False
        self.resp_head: bytes | None = None  # response head not yet written (see flush_head)
        self.up_until_close = False
        self.bytes_out = 0
        self.finished = False

    # == request side (called by the client connection) ===================================
    def on_head(self, method: bytes, http10: bool, keep_alive: bool) -> None:
        """The request head is parsed: classify headers and build the forwarded header lines."""
        self.headers_done = True
        self.method = method
        self.http10 = http10
        self.keep_alive = keep_alive
        fwd = self.fwd
        special = _REQ_SPECIAL
        for name, value in self.headers:
            kind = special.get(name.lower())
            if kind is None:
                fwd += (name, b": ", value, CRLF)
            elif kind == _AUTH:
                self.authorization = value
            elif kind == _LENGTH:
                self.content_length = int(value)  # the parser has validated it
                fwd += (name, b": ", value, CRLF)
            elif kind == _HOST:
                self.has_host = True
                fwd += (name, b": ", value, CRLF)
            elif kind == _TE:
                self.body_chunked = b"chunked" in value.lower()
            elif kind == _EXPECT:
                self.expect_continue = value.strip().lower() == b"100-continue"
            elif kind == _XFF:
                self.xff = value if self.xff is None else self.xff + b", " + value
            elif kind == _CONNECTION:
                for token in value.lower().split(b","):
                    token = token.strip()
                    if token and token not in _CONNECTION_TOKENS:
                        if self.extra_drop is None:
                            self.extra_drop = []
                        self.extra_drop.append(token)
        if self.extra_drop:
            self._drop_connection_listed()
        if method in _NOT_ALLOWED:
            self.forced = (405, errors.msg_method(method.decode("latin-1")), True)

    def _drop_connection_listed(self) -> None:
        drop = self.extra_drop or []
        fwd = self.fwd
        kept: list[bytes] = []
        for i in range(0, len(fwd), 4):
            if fwd[i].lower() not in drop:
                kept += fwd[i : i + 4]
        self.fwd = kept

    def start(self) -> None:
        """This request is at the head of its connection's line: check it and send it on."""
        if self.finished:
            return
        client = self.client
        gw = client.gw
        self.request_id = gw.new_request_id()
        self.phase = WAITING
        if self.forced is not None:
            status, message, close = self.forced
            if status == 308:
                self._redirect_to_https()
            else:
                self.respond_error(status, message, close=close)
            return
        split = split_target(self.url)
        if split is None:
            if client.listener == "intranet" and self._discovery():
                return
            self.respond_error(404, errors.msg_not_found_path(path_of(self.url).decode("latin-1")[:200]))
            return
        self.service, self.target = split
        entry = gw.routes.get(self.service)
        if entry is None:
            entry = self._group_member()  # `<group>` or `<group>.<service>`; answers when None
            if entry is None:
                return
        elif not is_authorized(
            self.authorization, entry.token, self.method, self.url, self.service, self.headers
        ):
            message = errors.MSG_UNAUTHORIZED_WRONG if self.authorization else errors.MSG_UNAUTHORIZED_MISSING
            self.respond_error(401, message)
            return
        self.entry = entry
        self.stats = gw.metrics.begin(entry.name)
        if self.content_length > gw.max_body_bytes:
            self.respond_error(413, errors.msg_too_large(gw.max_body_bytes), close=True)
            return
        limits = entry.limits
        if limits is not None and not self._admit(entry, limits):
            return
        loop = gw.loop
        self.deadline = self.t0 + entry.timeout_s
        self.timer = loop.call_at(self.deadline, self._on_timeout)
        self.head = self._request_head()
        if self.expect_continue and not self.req_done:
            client.write(errors.CONTINUE_100)
        if entry.mirror is not None:
            self.mirror = entry.mirror.begin(self)
        self._acquire()

    def _group_member(self) -> RouteEntry | None:
        """The member of the group path `self.service` this request goes to (None: answered).

        `<G>` takes the group's token; `<G>.<service>` the group's or the member's own."""
        group = self.client.gw.groups.get(self.service)
        if group is None:
            self.respond_error(404, errors.msg_not_found_service(self.service.decode("latin-1")[:100]))
            return None
        auth, method, url, headers = self.authorization, self.method, self.url, self.headers
        ok = is_authorized(auth, group.token, method, url, self.service, headers)
        if not ok and group.member is not None:
            ok = is_authorized(auth, group.member.token, method, url, self.service, headers)
        if not ok:
            message = errors.MSG_UNAUTHORIZED_WRONG if auth else errors.MSG_UNAUTHORIZED_MISSING
            self.respond_error(401, message)
            return None
        member = group.pick()
        if member is None:
            self.respond_error(503, errors.msg_group_no_member(group.name))
        return member

    def _discovery(self) -> bool:
        """VPC direct-connection discovery (intranet listener only, no token): True when answered.

        `GET /api/v1/servicediscovery/upstreams/<svc>` (and the older
        `/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/<svc>`) -> the ready instances of
        the service, which the SDK's DIRECT mode then calls itself (weighted round robin)."""
        path = path_of(self.url)
        for prefix in DISCOVERY_PREFIXES:
            if path.startswith(prefix):
                break
        else:
            return False
        name = path[len(prefix) :].strip(b"/")
        entry = self.client.gw.routes.get(name)
        if entry is None:
            self.respond_error(404, errors.msg_not_found_service(name.decode("latin-1")[:100]))
            return True
        app = entry.name
        items = [{"app": app, "ip": s.host, "port": s.port, "weight": 100} for s in entry.upstreams]
        body = json.dumps({"correlative": [app], "endpoints": {"items": items}}).encode()
        self.respond(200, body)
        return True

    def _admit(self, entry: RouteEntry, limits: ServiceLimits) -> bool:
        """Service and group QPS, service concurrency: False when answered 429."""
        now = self.client.gw.loop.time()
        bucket = limits.bucket
        if bucket is not None and not bucket.take(now):
            message = errors.msg_rate_limited("service", entry.name, limits.qps)
            self._too_many(message, bucket.retry_after())
            return False
        group = limits.group
        if group is not None and not group.take(now):
            message = errors.msg_rate_limited("group", limits.group_name or "", int(group.rate))
            self._too_many(message, group.retry_after())
            return False
        if limits.concurrency:
            if limits.in_flight >= limits.concurrency:
                self._too_many(errors.msg_concurrency_limited(entry.name, limits.concurrency), 1)
                return False
            limits.in_flight += 1
            self.counted = limits
        return True

    def _too_many(self, message: str, retry_after: int) -> None:
        self.respond_error(429, message, extra_headers=b"Retry-After: %d\r\n" % retry_after)

    def _redirect_to_https(self) -> None:
        """A plain-HTTP request on a TLS port with ssl_redirect: 308 to the same URL over https."""
        host = b""
        for name, value in self.headers:
            if name.lower() == b"host":
                host = value.strip()
                break
        if not host:
            sockname = self.client.transport.get_extra_info("sockname") if self.client.transport else None
            if sockname:
                h = str(sockname[0])
                host = (f"[{h}]" if ":" in h else h).encode() + b":%d" % sockname[1]
        if not _HOST_RE.match(host):
            self.respond_error(400, errors.MSG_HTTPS_ONLY, close=True)
            return
        url = self.url
        if not url.startswith(b"/"):  # absolute-form: keep only the path
            slash = url.find(b"/", url.find(b"://") + 3) if b"://" in url else -1
            url = url[slash:] if slash >= 0 else b"/"
        location = b"https://" + host + url
        self.respond_error(308, errors.MSG_REDIRECT, close=True, extra_headers=b"Location: %s\r\n" % location)

    def _request_head(self) -> bytes:
        client = self.client
        parts = [self.method, b" ", self.target, b" HTTP/1.1\r\n", *self.fwd]
        if not self.has_host:  # HTTP/1.0 callers may leave it out; HTTP/1.1 instances need one
            parts.append(b"Host: localhost\r\n")
        xff = client.peer if self.xff is None else self.xff + b", " + client.peer
        parts += (b"X-Forwarded-For: ", xff, b"\r\nX-Request-Id: ", self.request_id, CRLF)
        if self.body_chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(CRLF)
        return b"".join(parts)

    def request_body(self, data: bytes) -> None:
        self.body_in += len(data)
        gw = self.client.gw
        if self.body_in > gw.max_body_bytes:
            self._body_too_large()
            return
        if self.discard or self.phase == DONE:
            return
        if self.mirror is not None:
            self.mirror.add(data)
        direct = self.up is not None and not self.corked
        if self.body_chunked:
            if direct:
                self.up.transport.writelines((b"%x\r\n" % len(data), data, CRLF))  # type: ignore[union-attr]
                return
            self._buffer(b"%x\r\n" % len(data))
            self._buffer(data)
            self._buffer(CRLF)
        else:
            if direct:
                self.up.transport.write(data)  # type: ignore[union-attr]
                return
            self._buffer(data)

    def flush_up(self) -> None:
        """Write what was held back while the client's bytes were being parsed."""
        self.corked = False
        pending = self.pending
        self.pending = None
        self.pending_size = 0
        if pending and self.up is not None and self.up.transport is not None:
            self.up.transport.writelines(pending)
        self.client.resume(PAUSE_BUFFER)

    def _buffer(self, data: bytes) -> None:
        if self.pending is None:
            self.pending = [data]
        else:
            self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > PENDING_HIGH_WATER:
            self.client.pause(PAUSE_BUFFER)

    def request_done(self) -> None:
        self.req_done = True
        if self.body_chunked and not self.discard and self.phase != DONE:
            if self.up is not None and not self.corked:
                self.up.transport.write(LAST_CHUNK)  # type: ignore[union-attr]
            else:
                self._buffer(LAST_CHUNK)
        if self.mirror is not None:
            self.mirror.done(self)  # after the main request's body: the copies go now
            self.mirror = None
        if self.phase == DONE:
            self._finish()

    def request_broken(self) -> None:
        """The client sent bytes that are not HTTP in the middle of this request."""
        if self.phase == QUEUED:
            self.forced = (400, errors.MSG_BAD_REQUEST, True)
        elif self.phase == WAITING:
            self._drop_upstream()
            self.respond_error(400, errors.MSG_BAD_REQUEST, close=True)
        elif self.phase == STREAMING:
            self.client.abort()
        else:
            self.client.closing = True
            self._finish()

    def _body_too_large(self) -> None:
        if self.phase == QUEUED:
            self.forced = (413, errors.msg_too_large(self.client.gw.max_body_bytes), True)
            return
        if self.phase == WAITING:
            self._drop_upstream()
            self.respond_error(413, errors.msg_too_large(self.client.gw.max_body_bytes), close=True)
        elif self.phase == STREAMING:
            self.client.abort()
        else:  # answered already; the rest of the body is not worth reading: close (lingering)
            self.client.closing = True
            self._finish()

    # == instance side =====================================================================
    def _acquire(self) -> None:
        """Pick an instance and send the request there, or queue it there (or answer 503/429/450)."""
        entry = self.entry
        assert entry is not None
        gw = self.client.gw
        now = gw.loop.time()
        state = pick(entry, now, self.tried)
        if state is None:
            if entry.hold and not self.tried:
                gw.hold(self)  # scale from zero: wait for an instance (or answer 450)
                return
            if self.tried:
                self.respond_error(503, errors.msg_all_refused(entry.name, entry.status))
            else:
                self.respond_error(503, errors.msg_no_ready(entry.name, entry.status))
            return
        if entry.instance_qps:
            state = self._instance_with_tokens(entry, state, now)
            if state is None:
                return
        if state.active < state.limit:
            state.active += 1
            state.outstanding += 1
            self.state = state
            self._dispatch(state, now)
        elif state.outstanding - state.active < state.queue_max:
            state.outstanding += 1
            state.waiting.append(self)
            self.state = state
            self.queued = True
        else:  # the least loaded instance's queue is full: so is every other's (load shedding)
            self.respond_error(450, errors.msg_queue_full(entry.name, state.limit, state.queue_max))

    def _instance_with_tokens(
        self, entry: RouteEntry, state: UpstreamState | None, now: float
    ) -> UpstreamState | None:
        """`state`, or the next best instance under its own QPS limit; None: answered 429."""
        skipped = list(self.tried) if self.tried else []
        while state is not None:
            bucket = state.bucket
            if bucket is None or bucket.take(now):
                return state
            skipped.append(state)
            state = pick(entry, now, skipped)
        self._too_many(errors.msg_rate_limited("instance", entry.name, entry.instance_qps), 1)
        return None

    def _dispatch(self, state: UpstreamState, now: float) -> None:
        """Holding one of the instance's slots: send the request on a pooled or new connection."""
        gw = self.client.gw
        self.up_addr = state.addr
        self.attempts += 1
        conn = take_idle(state, now, gw.pool_idle_s)
        if conn is not None:
            self._attach(conn)
            return
        self.connect_task = gw.loop.create_task(self._connect(state))
        if now + gw.connect_timeout_s < self.deadline:  # else the keepalive timer answers (408)
            self.connect_timer = gw.loop.call_at(now + gw.connect_timeout_s, self._on_connect_timeout)

    async def _connect(self, state: UpstreamState) -> None:
        loop = self.client.gw.loop
        try:
            _, proto = await loop.create_connection(lambda: UpstreamConnection(state), state.host, state.port)
        except OSError:
            if self.state is state and self.phase == WAITING:
                self.connect_task = None
                self._connect_failed(state)
            return
        conn = proto
        self.connect_task = None
        if self.state is not state or self.phase != WAITING:
            release(conn, loop.time())  # the request went away meanwhile; keep the connection
            return
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None
        self._attach(conn)

    def _connect_failed(self, state: UpstreamState) -> None:
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None
        state.mark_down(self.client.gw.loop.time())
        self._release_state()
        if self.tried is None:
            self.tried = [state]
        else:
            self.tried.append(state)
        self._acquire()

    def _on_connect_timeout(self) -> None:
        self.connect_timer = None
        if self.phase != WAITING or self.up is not None:
            return
        self._drop_upstream()
        assert self.entry is not None
        self.respond_error(504, errors.msg_connect_timeout(self.entry.name))

    def _attach(self, conn: UpstreamConnection) -> None:
        self.up = conn
        if not self.t_sent:
            self.t_sent = perf_counter()
        conn.exchange = self
        conn.received = False
        transport = conn.transport
        assert transport is not None
        pending = self.pending
        if self.client.in_feed and not self.req_done:
            # more of the body is in the bytes being parsed: send it with the head (flush_up)
            self.corked = True
            self.pending = [self.head, *pending] if pending else [self.head]
        elif pending:
            self.pending = None
            self.pending_size = 0
            transport.writelines((self.head, *pending))
            self.client.resume(PAUSE_BUFFER)
        else:
            transport.write(self.head)
        if conn.write_paused:
            self.client.pause(PAUSE_UPSTREAM)
        if self.client.write_paused:
            conn.pause_reading()

    def _release_state(self) -> None:
        """Give back this request's place at its instance (a slot, or a place in its queue)."""
        state = self.state
        if state is None:
            return
        self.state = None
        state.outstanding -= 1
        if self.queued:
            self.queued = False
            state.waiting.remove(self)
            return
        state.active -= 1
        if state.waiting:
            drain_queue(state, self.client.gw.loop.time())

    def reroute(self, routes: dict[bytes, RouteEntry]) -> None:
        """Waiting in the queue of an instance that left the snapshot: pick again."""
        self._release_state()
        name = self.entry.name if self.entry is not None else self.service.decode("latin-1")
        entry = routes.get(name.encode())  # the same service (a group request stays with its member)
        if entry is None:
            self.respond_error(404, errors.msg_not_found_service(name[:100]))
            return
        self.entry = entry
        self._acquire()

    def _drop_upstream(self) -> None:
        """Forget the instance side of this request, closing its connection (not reusable)."""
        if self.held:
            self.client.gw.unhold(self)
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None
        self.corked = False
        conn = self.up
        if conn is not None:
            self._detach(conn)
            conn.close()
        self._release_state()

    def _detach(self, conn: UpstreamConnection) -> None:
        """Stop using `conn` for this request (the caller pools or closes it)."""
        self.up = None
        if conn.write_paused:
            self.client.resume(PAUSE_UPSTREAM)

    # -- callbacks from UpstreamConnection -------------------------------------------------
    def upstream_headers(
        self,
        conn: UpstreamConnection,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        self._cancel_timer()
        if self.phase != WAITING:
            return
        self.status = status
        has_length = False
        chunked = False
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        drop = _RESP_DROP
        for name, value in headers:
            lname = name.lower()
            if lname in drop:
                if lname == b"transfer-encoding":
                    chunked = True
                continue
            if lname == b"content-length":
                has_length = True
            parts += (name, b": ", value, CRLF)
        no_body = self.method == b"HEAD" or status == 204 or status == 304
        client = self.client
        if not no_body and not has_length:
            if not chunked:
                self.up_until_close = True
            if self.http10:
                self.resp_close = True  # no chunked framing for HTTP/1.0: the close ends the body
            else:
                self.resp_chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
        parts += (b"X-Request-Id: ", self.request_id, CRLF)
        if self.resp_close or not self.keep_alive or client.closing:
            client.closing = True
            parts.append(b"Connection: close\r\n\r\n")
        elif self.http10:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(CRLF)
        self.phase = STREAMING
        # The head is sent with the first piece of body, or when the read that brought it ends
        # (flush_head), whichever comes first: one write instead of two for small responses.
        self.resp_head = b"".join(parts)
        if self.method == b"HEAD":
            # the response parser cannot be told that no body follows a HEAD: do not reuse
            self.up = None
            conn.close()
            self._release_state()
            self._response_complete()

    def upstream_body(self, data: bytes) -> None:
        if not data or self.phase != STREAMING:
            return
        self.bytes_out += len(data)
        head = self.resp_head
        if head is not None:
            self.resp_head = None
            if self.resp_chunked:
                self.client.writelines((head, b"%x\r\n" % len(data), data, CRLF))
            else:
                self.client.writelines((head, data))
        elif self.resp_chunked:
            self.client.writelines((b"%x\r\n" % len(data), data, CRLF))
        else:
            self.client.write(data)

    def flush_head(self) -> None:
        head = self.resp_head
        if head is not None:
            self.resp_head = None
            self.client.write(head)

    def upstream_done(self, conn: UpstreamConnection, keep_alive: bool) -> None:
        self._detach(conn)
        if keep_alive and self.req_done and not self.up_until_close:
            release(conn, self.client.gw.loop.time())
        else:
            conn.close()
        self._release_state()
        if self.phase == STREAMING:
            self._response_complete()

    def upstream_lost(self, conn: UpstreamConnection, protocol_error: bool) -> None:
        """The instance closed (or broke) the connection while this request was using it."""
        if self.up is not conn:
            return
        self._detach(conn)
        self._release_state()
        if self.phase == STREAMING:
            if self.up_until_close and not protocol_error:
                self._response_complete()  # the close is how this response ends
            else:
                self.client.abort()
            return
        if self.phase != WAITING:
            return
        if (
            not conn.received
            and not protocol_error
            and conn.idle_since > 0.0  # it came from the pool: it may have gone stale there
            and self.method in _REPLAYABLE
            and self.content_length <= 0
            and not self.body_chunked
            and self.attempts < MAX_ATTEMPTS
        ):
            self._acquire()
            return
        assert self.entry is not None
        self.respond_error(503, errors.msg_crashed(self.entry.name))

    def _on_timeout(self) -> None:
        self.timer = None
        if self.phase != WAITING:
            return
        assert self.entry is not None
        if self.held:  # no instance came up in time: 503 as for no instance, see docs/traffic.md
            self._drop_upstream()
            message = errors.msg_no_instance_in_time(self.entry.name, self.entry.timeout_s)
            self.respond_error(503, message, extra_headers=b"Retry-After: 1\r\n")
            return
        self._drop_upstream()
        self.respond_error(408, errors.msg_timeout(self.entry.name, self.entry.timeout_s))

    # == answers ============================================================================
    def respond_error(
        self, status: int, message: str, close: bool = False, extra_headers: bytes = b""
    ) -> None:
        """Answer with a JSON error; the connection stays usable when the body can be skipped."""
        self.respond(status, None, message, close, extra_headers)

    def respond(
        self,
        status: int,
        body: bytes | None,
        message: str = "",
        close: bool = False,
        extra_headers: bytes = b"",
    ) -> None:
        """Answer from the gateway itself: `body` (JSON) or, when None, the error for `message`."""
        if self.phase == DONE or self.phase == STREAMING:
            return
        self.own_answer = True
        self._cancel_timer()
        if not self.request_id:
            self.request_id = self.client.gw.new_request_id()
        client = self.client
        if not self.req_done:
            has_body = self.body_chunked or self.content_length > 0
            if has_body and (self.expect_continue or self.content_length > client.gw.max_body_bytes):
                close = True  # the body will not come (Expect) or is not worth reading
            self.discard = True
        close = close or not self.keep_alive or client.closing
        if close:
            client.closing = True
        self.status = status
        self.phase = DONE
        if self.pending is not None:
            self.pending = None
            self.pending_size = 0
            client.resume(PAUSE_BUFFER)
        rid = self.request_id
        if body is None:
            response = errors.error_response(status, message, rid, close, self.http10, extra_headers)
        else:
            response = errors.json_response(status, body, rid, close, self.http10)
        client.write(response)
        if self.req_done or close:
            self._finish()

    def _response_complete(self) -> None:
        self.t_resp = perf_counter()
        head = self.resp_head
        if head is not None:
            self.resp_head = None
            self.client.write(head + LAST_CHUNK if self.resp_chunked else head)
        elif self.resp_chunked:
            self.client.write(LAST_CHUNK)
        self.phase = DONE
        if self.req_done:
            self._finish()
        else:
            self.discard = True  # the instance answered before the body ended: skip the rest

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._cancel_timer()
        if self.counted is not None:
            self.counted.in_flight -= 1
            self.counted = None
        self.client.exchange_finished(self)

    def abort(self) -> None:
        """The client connection is gone: stop everything this request holds."""
        if self.finished:
            return
        if self.phase != DONE:
            self.status = 499  # logged only: the client hung up first
        self.phase = DONE
        self._drop_upstream()
        self.finished = True
        self._cancel_timer()
        if self.counted is not None:
            self.counted.in_flight -= 1
            self.counted = None


def drain_queue(state: UpstreamState, now: float) -> None:
    """Send waiting requests to the instance while it has free slots (FIFO)."""
    waiting = state.waiting
    while waiting and state.active < state.limit:
        ex = waiting.popleft()
        ex.queued = False
        state.active += 1
        ex._dispatch(state, now)
