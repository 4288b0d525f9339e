"""Admission: every answer the gateway gives a request instead of an instance's, decided here (no I/O).

Each function takes plain values (the listener's access lists, the route tables, the request's
method, target and headers, the loop time) and returns either what the request may go on with
or a `Reject`: the status, the message and how to answer (close the connection or not, extra
header lines). `exchange.Exchange` only carries the verdicts out; tests call these functions
with values they build, no socket.

In the order a request meets them (the request path: accept -> parse -> admit -> pick -> proxy ->
finish):

- at accept, `connection_flags`: the peer against the listener's allow-list (`acl.py`);
- at the parsed head, `head_verdict`: 405 for TRACE/CONNECT/TRACK, then for the connection's
  flags: 308 to https (or 400) for plain HTTP on a TLS port, 403 for a peer (or, behind a trusted
  proxy, an X-Forwarded-For client) not in the allow-list;
- at its turn, `off_route` (not under /api/predict/: discovery on the intranet listener, or
  404), `route` (404 unknown service or group, 401 token, 503 group without a member) and
  `limits` (413 body size, 429 service / group QPS, service tokens per minute and service
  concurrency);
- when an instance is picked, `pick_instance` (503 none ready or all refused, 429 instance QPS,
  None: hold for a scale-from-zero service), `hold` (450 too many held) and `slot` (send now,
  queue at the instance, or 450 its queue is full);
- while it is under way, the failures: `timed_out` (408, or 503 when held), `connect_timed_out`
  (504), `instance_closed` (503), `bad_request` (400), `body_too_large` (413), `service_gone`
  (404: its service left the routing snapshot while it waited), `bad_response` (502: the
  instance's answer is not valid HTTP);
- the connection's own refusals: `framing` (a rule of framing.RULES broken: 400/413/417/501) and
  `refused` (bounds.py: 408 slow head or body, 414 / 431 head too large).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from openeas.gateway import discovery, errors
from openeas.gateway.acl import Acl, client_address
from openeas.gateway.auth import header_value, is_authorized_either
from openeas.gateway.framing import FramingRule
from openeas.gateway.instances import UpstreamState
from openeas.gateway.limits import SharedRate
from openeas.gateway.metrics import REJECT_REASONS
from openeas.gateway.pickers import PickedRequest
from openeas.gateway.routes import GroupEntry, RouteEntry
from openeas.gateway.routing import path_of
from openeas.gateway.snapshot import GatewaySettings

# connection flags (ClientConnection.special): what every request on the connection needs checked
PEER_DENIED = 1  # the peer is not in the listener's allow-list: 403, then close
PEER_IS_PROXY = 2  # the peer is a trusted proxy: check the client named by X-Forwarded-For
PLAIN_ON_TLS = 4  # plain HTTP on a TLS port: 308 to https (ssl_redirect) or 400

_HOST_RE = re.compile(rb"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
NOT_ALLOWED_METHODS = frozenset({b"TRACE", b"CONNECT", b"TRACK"})

# slot(): what to do with a request at the instance it was given
SEND_NOW = 1  # it holds one of the instance's slots
QUEUE = 2  # it waits in the instance's queue


@dataclass(frozen=True, slots=True)
class Reject:
    """An answer from the gateway itself: `status` with the JSON error for `message`."""

    status: int
    message: str
    close: bool = False  # close the connection after the answer
    headers: bytes = b""  # extra complete header lines (`Retry-After: 1\r\n`)

    @property
    def reason(self) -> str:
        """Why, as `openeas_gateway_rejected_total` labels it (auth, acl, size, rate, ...); "other"
        for an answer that is not counted as a rejection there (the 308 redirect to https)."""
        return REJECT_REASONS.get(self.status, "other")


@dataclass(frozen=True, slots=True)
class Wait:
    """Not decided yet: a shared (Redis) limit is fetching permits; `bucket.wait(resume)` calls
    back when they came, and the request's limits are checked again (nothing was taken)."""

    bucket: SharedRate


@dataclass(frozen=True, slots=True)
class ListenerAccess:
    """Who may call through one listener: compiled from the gateway settings."""

    acl: Acl
    trusted: Acl  # peers whose X-Forwarded-For names the client
    open: bool  # anyone: nothing to check at accept

    @classmethod
    def build(cls, entries: tuple[str, ...] | None, trusted: tuple[str, ...]) -> ListenerAccess:
        acl = Acl(entries)
        return cls(acl, Acl(trusted), acl.allow_all)


def listener_access(settings: GatewaySettings) -> dict[str, ListenerAccess]:
    return {
        "internet": ListenerAccess.build(settings.internet_acl, settings.trusted_proxies),
        "intranet": ListenerAccess.build(settings.intranet_acl, settings.trusted_proxies),
    }


@dataclass(frozen=True, slots=True)
class Discovery:
    """A discovery request for a service of this gateway: answered with its instances."""

    entry: RouteEntry


# == accept and head =======================================================================


def connection_flags(access: ListenerAccess, peer: str) -> int:
    """PEER_DENIED / PEER_IS_PROXY for a connection from `peer` (0: nothing to check)."""
    if access.open:
        return 0
    if access.trusted and access.trusted.allows(peer):
        return PEER_IS_PROXY
    if not access.acl.allows(peer):
        return PEER_DENIED  # answered 403 at its first request, then closed
    return 0


def method_verdict(method: bytes) -> Reject | None:
    """405 for methods that must not cross a proxy."""
    if method in NOT_ALLOWED_METHODS:
        return Reject(405, errors.msg_method(method.decode("latin-1")), close=True)
    return None


def head_verdict(
    flags: int,
    access: ListenerAccess,
    peer: str,
    xff: bytes | None,
    ssl_redirect: bool,
    gateway: str,
    listener: str,
    host: bytes,
    sockname: tuple[str, int] | None,
    url: bytes,
) -> Reject | None:
    """For a connection with `flags`: the answer its request gets instead of going on, or None.

    `host`: the request's Host header (b"" when absent), `sockname`: the listener's address
    (the redirect's host when there is no Host header)."""
    if flags & PLAIN_ON_TLS:
        if ssl_redirect:
            return https_redirect(host, sockname, url)
        return Reject(400, errors.MSG_HTTPS_ONLY, close=True)
    if flags & PEER_DENIED:
        return Reject(403, errors.msg_acl_denied(peer, gateway, listener), close=True)
    if flags & PEER_IS_PROXY:
        address = client_address(peer, xff, access.trusted)
        if not access.acl.allows(address):
            # a trusted proxy carries other callers too: its connection stays open
            return Reject(403, errors.msg_acl_denied(address, gateway, listener))
    return None


def https_redirect(host: bytes, sockname: tuple[str, int] | None, url: bytes) -> Reject:
    """308 to the same URL over https (400 when no valid host can be named)."""
    host = host.strip()
    if not host and sockname:
        h = str(sockname[0])
        host = (f"[{h}]" if ":" in h else h).encode() + b":%d" % sockname[1]
    if not _HOST_RE.match(host):
        return Reject(400, errors.MSG_HTTPS_ONLY, close=True)
    if not url.startswith(b"/"):  # absolute-form: keep only the path
        slash = url.find(b"/", url.find(b"://") + 3) if b"://" in url else -1
        url = url[slash:] if slash >= 0 else b"/"
    return Reject(308, errors.MSG_REDIRECT, close=True, headers=b"Location: https://%s%s\r\n" % (host, url))


def host_of(headers: list[tuple[bytes, bytes]]) -> bytes:
    return header_value(headers, b"host")


# == route, auth, limits ===================================================================


def off_route(url: bytes, listener: str, routes: dict[bytes, RouteEntry]) -> Discovery | Reject:
    """A target not under /api/predict/: a discovery request (intranet listener only), or 404."""
    if listener == "intranet":
        name = discovery.service_of(url)
        if name is not None:
            entry = routes.get(name)
            if entry is None:
                return Reject(404, errors.msg_not_found_service(name.decode("latin-1")[:100]))
            return Discovery(entry)
    return Reject(404, errors.msg_not_found_path(path_of(url).decode("latin-1")[:200]))


def route(
    service: bytes,
    authorization: bytes | None,
    method: bytes,
    url: bytes,
    headers: list[tuple[bytes, bytes]],
    routes: dict[bytes, RouteEntry],
    groups: dict[bytes, GroupEntry],
) -> RouteEntry | Reject:
    """The service a request for `service` goes to, when its token opens it.

    `service` is a service, `<G>` (the group's token; a member picked by weight) or
    `<G>.<service>` (the group's token or the member's own)."""
    entry = routes.get(service)
    if entry is not None:
        old = entry.route.old_token
        if is_authorized_either(authorization, entry.token, old, method, url, service, headers):
            return entry
        return _unauthorized(authorization)
    group = groups.get(service)
    if group is None:
        return Reject(404, errors.msg_not_found_service(service.decode("latin-1")[:100]))
    ok = is_authorized_either(authorization, group.token, group.old_token, method, url, service, headers)
    if not ok and (m := group.member) is not None:
        ok = is_authorized_either(authorization, m.token, m.route.old_token, method, url, service, headers)
    if not ok:
        return _unauthorized(authorization)
    member = group.pick()
    if member is None:
        return Reject(503, errors.msg_group_no_member(group.name))
    return member


def _unauthorized(authorization: bytes | None) -> Reject:
    return Reject(401, errors.MSG_UNAUTHORIZED_WRONG if authorization else errors.MSG_UNAUTHORIZED_MISSING)


def limits(entry: RouteEntry, content_length: int, max_body_bytes: int, now: float) -> Reject | Wait | None:
    """413 for a declared body over the gateway's limit; 429 for the service's or its group's QPS
    or the service's concurrency. None: admitted (holding a concurrency slot when the service
    has a concurrency limit: the caller gives it back when the request ends). Wait: a limit
    shared in Redis is fetching permits; nothing was taken, call again when it calls back."""
    if content_length > max_body_bytes:
        return body_too_large(max_body_bytes)
    lim = entry.limits
    if lim is None:
        return None
    for shared in lim.shared:  # before anything is taken: a Wait must leave no trace
        if not shared.ready(now):
            return Wait(shared)
    bucket = lim.bucket
    if bucket is not None and not bucket.take(now):
        return _too_many(errors.msg_rate_limited("service", entry.name, lim.qps), bucket.retry_after())
    group = lim.group
    if group is not None and not group.take(now):
        return _too_many(
            errors.msg_rate_limited("group", lim.group_name or "", int(group.rate)), group.retry_after()
        )
    tokens = lim.tokens
    if tokens is not None and not tokens.take(now):
        return _too_many(errors.msg_token_limited(entry.name, lim.token_limit), tokens.retry_after())
    if lim.concurrency:
        slots = lim.slots
        if lim.in_flight >= lim.concurrency or (slots is not None and not slots.take(now)):
            return _too_many(errors.msg_concurrency_limited(entry.name, lim.concurrency), 1)
        lim.in_flight += 1
    return None


def _too_many(message: str, retry_after: int) -> Reject:
    return Reject(429, message, headers=b"Retry-After: %d\r\n" % retry_after)


# == pick ==================================================================================


def pick_instance(
    entry: RouteEntry, now: float, tried: list[UpstreamState] | None, request: PickedRequest
) -> UpstreamState | Reject | Wait | None:
    """The instance this attempt goes to (the service's picker, then the instance QPS limit).

    None: hold the request (a scale-from-zero service with no instance yet, first attempt).
    Wait: the instance's QPS is counted in Redis and permits are on their way: pick again when
    they came."""
    state = entry.picker.pick(entry.upstreams, now, tried, request)
    if state is None:
        if entry.hold and not tried:
            return None
        if tried:
            return Reject(503, errors.msg_all_refused(entry.name, entry.status))
        return Reject(503, errors.msg_no_ready(entry.name, entry.status))
    if not entry.instance_qps:
        return state
    skipped = list(tried) if tried else []
    while state is not None:  # the next best instance under its own QPS limit
        bucket = state.bucket
        shared = state.shared_bucket
        if shared is not None and not shared.ready(now):
            return Wait(shared)
        if bucket is None or bucket.take(now):
            return state
        skipped.append(state)
        state = entry.picker.pick(entry.upstreams, now, skipped, request)
    return _too_many(errors.msg_rate_limited("instance", entry.name, entry.instance_qps), 1)


def slot(entry: RouteEntry, state: UpstreamState) -> int | Reject:
    """SEND_NOW when the instance has a free slot, QUEUE when its queue has room, else 450: the
    least loaded instance's queue is full, so is every other's (load shedding)."""
    if state.active < state.limit:
        return SEND_NOW
    if state.outstanding - state.active < state.queue_max:
        return QUEUE
    return Reject(450, errors.msg_queue_full(entry.name, state.limit, state.queue_max))


def hold(entry: RouteEntry, held: int) -> Reject | None:
    """450 when `held` requests already wait for the service's first instance (max_queue_size)."""
    limit = entry.route.max_queue_size
    if held >= limit:
        return Reject(450, errors.msg_hold_full(entry.name, limit))
    return None


# == failures under way ====================================================================


def timed_out(entry: RouteEntry, held: bool) -> Reject:
    """The service's keepalive ran out before the response started: 408, or 503 when the request
    was held for a first instance that did not come in time (docs/traffic.md)."""
    if held:
        return Reject(
            503, errors.msg_no_instance_in_time(entry.name, entry.timeout_s), headers=b"Retry-After: 1\r\n"
        )
    return Reject(408, errors.msg_timeout(entry.name, entry.timeout_s))


def service_gone(name: str) -> Reject:
    """A request waiting for an instance whose service left the routing snapshot."""
    return Reject(404, errors.msg_not_found_service(name[:100]))


def connect_timed_out(entry: RouteEntry) -> Reject:
    return Reject(504, errors.msg_connect_timeout(entry.name))


def instance_closed(entry: RouteEntry) -> Reject:
    """The instance closed the connection before answering (and the request cannot be replayed)."""
    return Reject(503, errors.msg_crashed(entry.name))


def bad_request(message: str | None = None) -> Reject:
    """Bytes that are not HTTP/1.x (`message`: a more precise reason, e.g. the head is too large)."""
    return Reject(400, message or errors.MSG_BAD_REQUEST, close=True)


def internal_error() -> Reject:
    """The gateway's own code failed on this request: not the client's fault (never a 400)."""
    return Reject(500, errors.MSG_INTERNAL, close=True)


def body_too_large(max_body_bytes: int) -> Reject:
    return Reject(413, errors.msg_too_large(max_body_bytes), close=True)


def framing(rule: FramingRule) -> Reject:
    """A request that breaks a framing rule (framing.RULES): its status, then close."""
    return Reject(rule.status, errors.msg_framing(rule.name, rule.what), close=True)


def refused(status: int, message: str) -> Reject:
    """A request the connection's bounds refuse (408 slow head or body, 414 / 431 too large)."""
    return Reject(status, message, close=True)


def bad_response(entry: RouteEntry, why: str) -> Reject:
    """The instance's response is not valid HTTP (status line, headers too large): 502."""
    return Reject(502, errors.msg_bad_response(entry.name, why))
