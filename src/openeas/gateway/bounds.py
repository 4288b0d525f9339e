"""Resource bounds of one gateway: how long and how much a client (or an instance) may hold.

A gateway on the Internet must not be starved by clients that open connections and send
nothing, send a head a byte at a time (slowloris), trickle a body, or open thousands of
connections from one address; nor by an instance that answers garbage or never answers. Each
bound is a field of `ClientBounds` (the gateway record's `bounds`, spec/gateway.py), with a safe
default; `connection_verdict` is the accept-time check (pure, tested without sockets); the
time-based bounds are enforced by `ClientConnection.sweep` (once a second) and the size-based ones
by the parser callbacks. docs/gateway.md ("Resource bounds") lists them with what happens.
"""

from __future__ import annotations

from dataclasses import dataclass

# connection_verdict / Gateway.connection_events: why a connection was refused or cut
REFUSED_LISTENER = "refused_listener_full"  # max_connections of its listener reached
REFUSED_CLIENT = "refused_client_full"  # max_connections_per_client of its address reached
HEAD_TIMEOUT = "head_timeout"  # no complete request head within head_timeout_s (408 or silent close)
BODY_TOO_SLOW = "body_too_slow"  # request body under min_body_rate (408)
IDLE_CLOSED = "idle_closed"  # keep-alive connection idle past idle_timeout_s
CONNECTION_EVENTS = (REFUSED_LISTENER, REFUSED_CLIENT, HEAD_TIMEOUT, BODY_TOO_SLOW, IDLE_CLOSED)


@dataclass(frozen=True, slots=True)
class ClientBounds:
    head_timeout_s: float = 10.0  # accept (or first byte of a later request) -> complete head
    idle_timeout_s: float = 60.0  # keep-alive connection with no request in flight
    min_body_rate: int = 1024  # bytes/s a request body must average over each body_rate_window_s
    body_rate_window_s: float = 10.0
    max_head_bytes: int = 64 * 1024  # request line + headers (414 / 431); trailers likewise
    max_header_count: int = 100  # header lines (431)
    max_connections: int = 16384  # open client connections per listener
    max_connections_per_client: int = 4096  # per client address: many callers share one NAT address
    max_response_head_bytes: int = 64 * 1024  # an instance's status line + headers (502)


DEFAULT_BOUNDS = ClientBounds()


def connection_verdict(bounds: ClientBounds, on_listener: int, from_client: int) -> str | None:
    """At accept, with `on_listener` / `from_client` connections already open: refuse (why) or None."""
    if on_listener >= bounds.max_connections:
        return REFUSED_LISTENER
    if from_client >= bounds.max_connections_per_client:
        return REFUSED_CLIENT
    return None


def body_too_slow(bounds: ClientBounds, received: int, elapsed_s: float) -> bool:
    """True when `received` body bytes in `elapsed_s` (a whole window) are under the minimum rate."""
    return elapsed_s >= bounds.body_rate_window_s and received < bounds.min_body_rate * elapsed_s
