"""One request's I/O through the gateway: the state machine from its parsed head to its last byte.

The request path, in the order this file runs it (accept and parse are `client_connection.py`):

    on_head  -> headers.read_request_head; admission.method_verdict   (parse)
    start    -> admission.off_route / route / limits                  (admit)
    _acquire -> admission.pick_instance / slot, or Gateway.hold       (pick)
    dispatch -> a pooled or new instance connection (upstream.py); the body streams up and the
                response streams back (upstream_* callbacks, headers.response_head)  (proxy)
    _finish  -> ClientConnection.exchange_finished (or `abort` when the client is gone,
                ClientConnection.connection_lost) -> Gateway.log_exchange: metrics and the
                access log, the one place a request is counted, once   (finish)

An `Exchange` is created by the client connection when a request's head starts. Every answer
the gateway gives itself is an `admission.Reject` carried out by `reject`; what is decided, and
why, is in admission.py, and which headers go where is in headers.py: this class only moves
bytes, keeps the timers and hands back what it holds (the instance's slot or queue place, the
service's concurrency slot). It is driven by callbacks only; a task exists only while a new
connection to an instance is being opened.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Protocol

from openeas.gateway import admission, discovery, errors
from openeas.gateway.admission import QUEUE, SEND_NOW, Discovery, Reject, Wait
from openeas.gateway.flow import PAUSE_BUFFER, PAUSE_UPSTREAM
from openeas.gateway.headers import CRLF, read_request_head, request_head, response_head
from openeas.gateway.instances import UpstreamState, drain_queue
from openeas.gateway.limits import USAGE_TAIL, ServiceLimits, usage_tokens
from openeas.gateway.metrics import GatewayMetrics, ServiceStats
from openeas.gateway.mirror import MirrorCopy
from openeas.gateway.pickers import BODY_MAX
from openeas.gateway.routes import GroupEntry, RouteEntry
from openeas.gateway.routing import split_target
from openeas.gateway.tunnel import Tunnel, upgrade_request_head, upgrade_response_head
from openeas.gateway.upstream import UpstreamConnection, release, take_idle

_REPLAYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS"})
MAX_ATTEMPTS = 3
PENDING_HIGH_WATER = 256 * 1024  # body bytes buffered before an instance connection is ready
LAST_CHUNK = b"0\r\n\r\n"

# response phases
QUEUED = 0  # parsed, waiting for an earlier pipelined request to finish
WAITING = 1  # sent (or being sent) upstream, no response byte to the client yet
STREAMING = 2  # response head written, body streaming
DONE = 3  # response complete (or the connection is being torn down)


class ExchangeHost(Protocol):
    """What a request uses of its gateway (`gateway.Gateway`)."""

    routes: dict[bytes, RouteEntry]
    groups: dict[bytes, GroupEntry]
    metrics: GatewayMetrics
    max_body_bytes: int
    max_response_head_bytes: int
    pool_idle_s: float
    connect_timeout_s: float

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def new_request_id(self) -> bytes: ...

    def hold(self, ex: Exchange) -> None: ...

    def unhold(self, ex: Exchange) -> None: ...


class Client(Protocol):
    """What a request uses of its client connection (`client_connection.ClientConnection`)."""

    listener: str  # "internet" | "intranet"
    peer: bytes
    closing: bool  # close once the current answer is written
    in_feed: bool  # inside the parser: writes upstream may be coalesced (flush_up)
    write_paused: bool

    @property
    def gw(self) -> ExchangeHost: ...

    def write(self, data: bytes) -> None: ...

    def writelines(self, data: tuple[bytes, ...]) -> None: ...

    def pause(self, bit: int) -> None: ...

    def resume(self, bit: int) -> None: ...

    def abort(self) -> None: ...

    def exchange_finished(self, ex: Exchange) -> None: ...

    def start_tunnel(self, tunnel: Tunnel) -> None: ...

    def close(self) -> None: ...


class Exchange:
    __slots__ = (
        "attempts",
        "authorization",
        "await_body",
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
        "usage_tail",
        "websocket",
        "xff",
    )

    def __init__(self, client: Client, t0: float) -> None:
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
        self.fwd: list[bytes] = []
        self.forced: Reject | None = None  # the answer, decided before its turn
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
        self.held = False  # waiting for the service's first instance (scale from zero, Gateway.hold)
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
        self.resp_head: bytes | None = None  # response head not yet written (see flush_head)
        self.up_until_close = False
        self.bytes_out = 0
        self.finished = False
        self.usage_tail: bytes | None = None  # the response's last bytes, for a token limit
        self.await_body = False  # its picker keys on the body (pickers.wants_body): picked when in
        self.websocket = False  # a WebSocket upgrade (tunnel.wants_websocket): a 101 starts a tunnel

    # == parse (called by the client connection) ===========================================
    def on_head(self, method: bytes, http10: bool, keep_alive: bool) -> None:
        """The request head is parsed: sort its headers (headers.py), refuse a method (405)."""
        self.headers_done = True
        self.method = method
        self.http10 = http10
        self.keep_alive = keep_alive
        read_request_head(self, self.headers)
        self.forced = admission.method_verdict(method)

    # == admit ==============================================================================
    def start(self) -> None:
        """This request is at the head of its connection's line: admit it and send it on."""
        if self.finished:
            return
        client = self.client
        gw = client.gw
        self.request_id = gw.new_request_id()
        self.phase = WAITING
        if self.forced is not None:
            self.reject(self.forced)
            return
        split = split_target(self.url)
        if split is None:
            off = admission.off_route(self.url, client.listener, gw.routes)
            if isinstance(off, Discovery):
                self.respond(200, discovery.answer(off.entry))
            else:
                self.reject(off)
            return
        self.service, self.target = split
        entry = admission.route(
            self.service, self.authorization, self.method, self.url, self.headers, gw.routes, gw.groups
        )
        if isinstance(entry, Reject):
            self.reject(entry)
            return
        self.entry = entry
        self.stats = gw.metrics.begin(entry.name)
        self._admit()

    def _admit(self) -> None:
        """The limits (admission.limits), then on to an instance; called again when a limit
        shared in Redis answered Wait and its permits came (shared_limits.py)."""
        if self.finished:
            return
        entry = self.entry
        assert entry is not None
        client = self.client
        gw = client.gw
        loop = gw.loop
        now = loop.time()
        refused = admission.limits(entry, self.content_length, gw.max_body_bytes, now)
        if refused is not None:
            if isinstance(refused, Wait):
                refused.bucket.wait(self._admit)
                return
            self.reject(refused)
            return
        limits = entry.limits
        if limits is not None:
            if limits.concurrency:
                self.counted = limits  # holds one of its slots until _finish / abort
            if limits.tokens is not None:
                self.usage_tail = b""  # its response's `usage` is counted (_response_complete)
        self.deadline = self.t0 + entry.timeout_s
        self.timer = loop.call_at(self.deadline, self._on_timeout)
        self.head = request_head(
            self.method,
            self.target,
            self.fwd,
            self.has_host,
            self.xff,
            client.peer,
            self.request_id,
            self.body_chunked,
        )
        if self.websocket:
            self.head = upgrade_request_head(self.head)
        if self.expect_continue and not self.req_done:
            client.write(errors.CONTINUE_100)
        if entry.mirror is not None:
            self.mirror = entry.mirror.begin(self)
        if entry.picker.wants_body and not self.req_done and self.body_in < BODY_MAX:
            self.await_body = True  # request_body / request_done pick once the body is in
            return
        self._acquire(now)

    def _body_in(self) -> None:
        """The body a body-keyed picker waits for is in (or BODY_MAX of it): pick now."""
        self.await_body = False
        if not self.finished and self.phase != DONE:
            self._acquire(self.client.gw.loop.time())

    def body_head(self) -> bytes:
        """The body received so far, for a picker (pickers.PickedRequest); b"" when chunked."""
        pending = self.pending
        if self.body_chunked or not pending:
            return b""
        return b"".join(pending)

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
        if self.await_body and self.body_in >= BODY_MAX:
            self._body_in()

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
        if self.await_body:
            self._body_in()
        if self.phase == DONE:
            self._finish()

    def request_broken(self, verdict: Reject | None = None) -> None:
        """The client sent bytes that are not HTTP in the middle of this request (or broke a bound:
        `verdict`, e.g. 408 for a body under the minimum rate)."""
        verdict = verdict or admission.bad_request()
        if self.phase == QUEUED:
            self.forced = verdict
        elif self.phase == WAITING:
            self._drop_upstream()
            self.reject(verdict)
        elif self.phase == STREAMING:
            self.client.abort()
        else:
            self.client.closing = True
            self._finish()

    def _body_too_large(self) -> None:
        too_large = admission.body_too_large(self.client.gw.max_body_bytes)
        if self.phase == QUEUED:
            self.forced = too_large
            return
        if self.phase == WAITING:
            self._drop_upstream()
            self.reject(too_large)
        elif self.phase == STREAMING:
            self.client.abort()
        else:  # answered already; the rest of the body is not worth reading: close (lingering)
            self.client.closing = True
            self._finish()

    # == pick ===============================================================================
    def _pick_again(self) -> None:
        """The permits of an instance's QPS limit counted in Redis came: pick again."""
        if not self.finished and self.state is None:
            self._acquire(self.client.gw.loop.time())

    def _acquire(self, now: float) -> None:
        """Pick an instance and send the request there, queue it there, hold it, or answer."""
        entry = self.entry
        assert entry is not None
        picked = admission.pick_instance(entry, now, self.tried, self)
        if picked is None:
            self.client.gw.hold(self)  # scale from zero: wait for an instance (or answer 450)
            return
        if isinstance(picked, Wait):
            picked.bucket.wait(self._pick_again)
            return
        if isinstance(picked, Reject):
            self.reject(picked)
            return
        state = picked
        place = admission.slot(entry, state)
        if place == SEND_NOW:
            state.active += 1
            state.outstanding += 1
            self.state = state
            self.dispatch(state, now)
        elif place == QUEUE:
            state.outstanding += 1
            state.waiting.append(self)
            self.state = state
            self.queued = True
        else:
            assert isinstance(place, Reject)
            self.reject(place)

    # == proxy ==============================================================================
    def dispatch(self, state: UpstreamState, now: float) -> None:
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
            head_limit = self.client.gw.max_response_head_bytes
            _, proto = await loop.create_connection(
                lambda: UpstreamConnection(state, head_limit), state.host, state.port
            )
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
        self._acquire(self.client.gw.loop.time())

    def _on_connect_timeout(self) -> None:
        self.connect_timer = None
        if self.phase != WAITING or self.up is not None:
            return
        self._drop_upstream()
        assert self.entry is not None
        self.reject(admission.connect_timed_out(self.entry))

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

    def reroute(self) -> None:
        """Waiting for an instance that left the snapshot (or held for a first one): pick again."""
        self._release_state()
        gw = self.client.gw
        name = self.entry.name if self.entry is not None else self.service.decode("latin-1")
        entry = gw.routes.get(name.encode())  # the same service (a group request stays with its member)
        if entry is None:
            self.reject(admission.service_gone(name))
            return
        self.entry = entry
        self._acquire(gw.loop.time())

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
        client = self.client
        no_body = self.method == b"HEAD" or status == 204 or status == 304
        keep = self.keep_alive and not client.closing
        head, self.resp_chunked, close, self.up_until_close = response_head(
            status, reason, headers, no_body, self.http10, keep, self.request_id
        )
        if close:
            client.closing = True
        self.phase = STREAMING
        # The head is sent with the first piece of body, or when the read that brought it ends
        # (flush_head), whichever comes first: one write instead of two for small responses.
        self.resp_head = head
        if self.method == b"HEAD":
            # the response parser cannot be told that no body follows a HEAD: do not reuse
            self.up = None
            conn.close()
            self._release_state()
            self._response_complete()

    def upstream_upgrade(
        self, conn: UpstreamConnection, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bool:
        """The instance answered 101: relay raw bytes from now on (tunnel.py). False when this
        request did not ask for a WebSocket (the 101 is then a protocol error)."""
        if not self.websocket or self.phase != WAITING or self.up is not conn:
            return False
        self._cancel_timer()
        client = self.client
        self.status = 101
        self.t_resp = perf_counter()
        client.write(upgrade_response_head(reason, headers, self.request_id))
        tunnel = Tunnel(client, conn, client.gw.loop)
        conn.tunnel = tunnel  # never back to the pool: the tunnel closes it
        self.up = None
        self._release_state()  # a tunnel does not hold the instance's slot
        self.phase = DONE
        client.start_tunnel(tunnel)
        self._finish()  # counted and logged once, here, at the upgrade (status 101)
        return True

    def upstream_body(self, data: bytes) -> None:
        if not data or self.phase != STREAMING:
            return
        self.bytes_out += len(data)
        if self.usage_tail is not None:
            self.usage_tail = (self.usage_tail + data)[-USAGE_TAIL:]
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
            self._acquire(self.client.gw.loop.time())
            return
        assert self.entry is not None
        if protocol_error:  # garbage or an oversized head: 502, the instance is at fault
            self.reject(admission.bad_response(self.entry, conn.error or "not HTTP/1.x"))
            return
        self.reject(admission.instance_closed(self.entry))

    def _on_timeout(self) -> None:
        self.timer = None
        if self.phase != WAITING:
            return
        assert self.entry is not None
        held = self.held  # no instance came up in time: 503 as for no instance (docs/traffic.md)
        self._drop_upstream()
        self.reject(admission.timed_out(self.entry, held))

    # == answers ============================================================================
    def reject(self, verdict: Reject) -> None:
        """Answer with the JSON error of `verdict`; the connection stays usable when the body can
        be skipped."""
        self.respond(verdict.status, None, verdict.message, verdict.close, verdict.headers)

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
        tail = self.usage_tail
        if tail is not None and self.entry is not None and self.entry.limits is not None:
            tokens = self.entry.limits.tokens
            if tokens is not None:
                tokens.debit(usage_tokens(tail), self.client.gw.loop.time())
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
            self.counted.release()
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
            self.counted.release()
            self.counted = None
