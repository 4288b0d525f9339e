"""Every answer the gateway gives instead of an instance's, decided from plain values (no socket).

Each test builds the route tables, limits and access lists a gateway would hold and calls the
admission function the request path calls; the status, the message and how the connection is
treated are checked. The same rules through a real gateway process: test_proxy.py, test_access.py,
test_limits.py, test_tls.py and test_hold_and_mirror.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from openeas.gateway import admission, discovery
from openeas.gateway.admission import (
    PEER_DENIED,
    PEER_IS_PROXY,
    PLAIN_ON_TLS,
    QUEUE,
    SEND_NOW,
    Discovery,
    ListenerAccess,
    Reject,
)
from openeas.gateway.groups import GroupRoute
from openeas.gateway.instances import UpstreamState
from openeas.gateway.limits import GroupBuckets, ServiceLimits
from openeas.gateway.routes import GroupEntry, RouteEntry, group_entries
from openeas.gateway.snapshot import ServiceRoute, Upstream

TOKEN = b"tok-svc-0123456789"
GROUP_TOKEN = b"tok-grp-0123456789"
OPEN = ListenerAccess.build(None, ())


@dataclass
class Req:
    """What a picker may read of a request."""

    method: bytes = b"POST"
    target: bytes = b"/"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def entry(name: str = "svc", n: int = 2, limits: ServiceLimits | None = None, **route: object) -> RouteEntry:
    ups = tuple(Upstream(f"{name}-{i}", "127.0.0.1", 9000 + i) for i in range(n))
    r = ServiceRoute(name=name, token=TOKEN, upstreams=ups, timeout_s=2.5, status="Running", **route)  # type: ignore[arg-type]
    states = [UpstreamState(u) for u in ups]
    for s in states:
        s.configure(r)
    return RouteEntry(r, states, limits)


def tables(*entries: RouteEntry) -> dict[bytes, RouteEntry]:
    return {e.name.encode(): e for e in entries}


def rejected(verdict: object, status: int) -> Reject:
    assert isinstance(verdict, Reject), verdict
    assert verdict.status == status, verdict
    return verdict


# == accept and head ======================================================================


def test_connection_flags_from_the_allow_list() -> None:
    access = ListenerAccess.build(("10.0.0.0/8",), ("192.168.1.1",))
    assert admission.connection_flags(OPEN, "203.0.113.9") == 0  # anyone: nothing to check
    assert admission.connection_flags(access, "10.1.2.3") == 0
    assert admission.connection_flags(access, "203.0.113.9") == PEER_DENIED
    assert admission.connection_flags(access, "192.168.1.1") == PEER_IS_PROXY


def test_403_for_a_peer_outside_the_allow_list_closes() -> None:
    access = ListenerAccess.build(("10.0.0.0/8",), ())
    r = rejected(
        admission.head_verdict(
            PEER_DENIED, access, "203.0.113.9", None, False, "gw1", "internet", b"", None, b"/"
        ),
        403,
    )
    assert r.close and r.reason == "acl"
    assert "203.0.113.9" in r.message and "gw1" in r.message and "internet_acl" in r.message


def test_403_for_a_forwarded_client_keeps_the_proxy_connection() -> None:
    access = ListenerAccess.build(("10.0.0.0/8",), ("192.168.1.1",))
    args = (access, "192.168.1.1")
    r = rejected(
        admission.head_verdict(
            PEER_IS_PROXY, *args, b"203.0.113.9", False, "gw", "intranet", b"", None, b"/"
        ),
        403,
    )
    assert not r.close and "203.0.113.9" in r.message and "intranet_acl" in r.message
    assert (
        admission.head_verdict(PEER_IS_PROXY, *args, b"10.9.9.9", False, "gw", "intranet", b"", None, b"/")
        is None
    )
    assert admission.head_verdict(0, *args, None, False, "gw", "intranet", b"", None, b"/") is None


def test_plain_http_on_a_tls_port_400_or_308() -> None:
    r = rejected(
        admission.head_verdict(
            PLAIN_ON_TLS, OPEN, "1.2.3.4", None, False, "gw", "internet", b"h", None, b"/"
        ),
        400,
    )
    assert r.close and "https://" in r.message
    r = rejected(
        admission.head_verdict(
            PLAIN_ON_TLS,
            OPEN,
            "1.2.3.4",
            None,
            True,
            "gw",
            "internet",
            b"ex.com:8443",
            None,
            b"/api/predict/s?x=1",
        ),
        308,
    )
    assert r.close and r.headers == b"Location: https://ex.com:8443/api/predict/s?x=1\r\n"
    assert r.reason == "other"  # a redirect is not counted as a rejection


def test_https_redirect_host_from_the_socket_and_absolute_form() -> None:
    r = rejected(admission.https_redirect(b"", ("::1", 8443), b"http://x/api/predict/s"), 308)
    assert r.headers == b"Location: https://[::1]:8443/api/predict/s\r\n"
    r = rejected(admission.https_redirect(b"", ("127.0.0.1", 443), b"/p"), 308)
    assert r.headers == b"Location: https://127.0.0.1:443/p\r\n"
    # a Host header that is not a host name: no redirect to an attacker-chosen place
    assert rejected(admission.https_redirect(b"evil.com/x", None, b"/"), 400).close
    assert rejected(admission.https_redirect(b"", None, b"/"), 400).close


def test_405_for_methods_that_must_not_cross_a_proxy() -> None:
    for method in (b"TRACE", b"CONNECT", b"TRACK"):
        r = rejected(admission.method_verdict(method), 405)
        assert r.close and method.decode() in r.message and r.reason == "method"
    assert admission.method_verdict(b"GET") is None and admission.method_verdict(b"PATCH") is None


# == route, auth, limits ==================================================================


def test_404_for_a_path_off_the_predict_prefix_and_discovery() -> None:
    svc = entry()
    routes = tables(svc)
    r = rejected(admission.off_route(b"/other?q", "internet", routes), 404)
    assert "/other" in r.message and r.reason == "not_found"
    # discovery answers only on the intranet listener
    url = b"/api/v1/servicediscovery/upstreams/svc"
    rejected(admission.off_route(url, "internet", routes), 404)
    found = admission.off_route(url, "intranet", routes)
    assert isinstance(found, Discovery) and found.entry is svc
    body = json.loads(discovery.answer(found.entry))
    assert body["correlative"] == ["svc"]
    assert [(i["ip"], i["port"]) for i in body["endpoints"]["items"]] == [
        ("127.0.0.1", 9000),
        ("127.0.0.1", 9001),
    ]
    old = b"/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/nope"
    assert "'nope'" in rejected(admission.off_route(old, "intranet", routes), 404).message


def test_route_admits_with_the_service_token() -> None:
    svc = entry()
    routes = tables(svc)
    ok = admission.route(b"svc", TOKEN, b"POST", b"/api/predict/svc", [], routes, {})
    assert ok is svc
    assert admission.route(b"svc", b"Bearer " + TOKEN, b"GET", b"/api/predict/svc", [], routes, {}) is svc


def test_401_missing_or_wrong_token() -> None:
    routes = tables(entry())
    r = rejected(admission.route(b"svc", None, b"POST", b"/api/predict/svc", [], routes, {}), 401)
    assert "missing" in r.message and not r.close and r.reason == "auth"
    r = rejected(admission.route(b"svc", b"nope", b"POST", b"/api/predict/svc", [], routes, {}), 401)
    assert "not valid" in r.message
    assert TOKEN.decode() not in r.message


def test_404_unknown_service() -> None:
    r = rejected(admission.route(b"ghost", TOKEN, b"POST", b"/api/predict/ghost", [], {}, {}), 404)
    assert "'ghost'" in r.message


def _groups(a: RouteEntry, b: RouteEntry, weights: dict[str, int] | None = None) -> dict[bytes, GroupEntry]:
    mode = "customized" if weights is not None else "auto"
    group = GroupRoute("g", GROUP_TOKEN, mode, weights or {}, (a.name, b.name))
    return group_entries({"g": group}, tables(a, b))


def test_group_paths_tokens_and_the_503_without_a_member() -> None:
    a, b = entry("a"), entry("b")
    groups = _groups(a, b)
    routes = tables(a, b)
    assert admission.route(b"g", GROUP_TOKEN, b"GET", b"/api/predict/g", [], routes, groups) in (a, b)
    rejected(
        admission.route(b"g", TOKEN, b"GET", b"/api/predict/g", [], routes, groups), 401
    )  # a member's token
    # `<G>.<service>`: the group's token or the member's own
    assert admission.route(b"g.a", TOKEN, b"GET", b"/api/predict/g.a", [], routes, groups) is a
    assert admission.route(b"g.a", GROUP_TOKEN, b"GET", b"/api/predict/g.a", [], routes, groups) is a
    none = _groups(a, b, {"a": 0, "b": -1})
    r = rejected(admission.route(b"g", GROUP_TOKEN, b"GET", b"/api/predict/g", [], routes, none), 503)
    assert "'g'" in r.message and r.reason == "unavailable"


def test_413_body_over_the_gateway_limit() -> None:
    svc = entry()
    r = rejected(admission.limits(svc, 2049, 2048, 0.0), 413)
    assert r.close and "2 KiB" in r.message and r.reason == "size"
    assert admission.limits(svc, 2048, 2048, 0.0) is None
    assert admission.limits(svc, -1, 2048, 0.0) is None  # no Content-Length (chunked: counted as it comes)
    assert rejected(admission.body_too_large(1024 * 1024), 413).close


def test_429_service_and_group_qps_with_retry_after() -> None:
    buckets = GroupBuckets()
    lim = ServiceLimits()
    lim.configure(2, "g", buckets.get("g", 3), 0)
    svc = entry(limits=lim)
    assert admission.limits(svc, 0, 100, 0.0) is None
    assert admission.limits(svc, 0, 100, 0.0) is None
    r = rejected(admission.limits(svc, 0, 100, 0.0), 429)
    assert "service rate limit of 2" in r.message and r.headers == b"Retry-After: 1\r\n" and not r.close
    # a second service of the group: its own bucket is full, the group's has one token left
    other_lim = ServiceLimits()
    other_lim.configure(0, "g", buckets.get("g", 3), 0)
    other = entry("other", limits=other_lim)
    assert admission.limits(other, 0, 100, 0.0) is None
    r = rejected(admission.limits(other, 0, 100, 0.0), 429)
    assert "group rate limit of 3" in r.message and r.reason == "rate"
    assert admission.limits(other, 0, 100, 1.0) is None  # a second later the bucket refilled


def test_429_concurrency_holds_a_slot_until_given_back() -> None:
    lim = ServiceLimits()
    lim.configure(0, None, None, 1)
    svc = entry(limits=lim)
    assert admission.limits(svc, 0, 100, 0.0) is None and lim.in_flight == 1
    r = rejected(admission.limits(svc, 0, 100, 0.0), 429)
    assert "concurrency limit" in r.message and lim.in_flight == 1
    lim.in_flight -= 1  # the first request finished (Exchange._finish)
    assert admission.limits(svc, 0, 100, 0.0) is None


# == pick =================================================================================


def test_pick_the_least_loaded_instance_or_503() -> None:
    svc = entry()
    a, b = svc.upstreams
    a.outstanding = 3
    assert admission.pick_instance(svc, 0.0, None, Req()) is b
    r = rejected(admission.pick_instance(entry(n=0), 0.0, None, Req()), 503)
    assert "no ready instance" in r.message and "Running" in r.message
    r = rejected(admission.pick_instance(svc, 0.0, [a, b], Req()), 503)
    assert "refused" in r.message


def test_scale_from_zero_holds_then_450_when_too_many_wait() -> None:
    svc = entry(n=0, scale_from_zero=True, max_queue_size=2)
    assert admission.pick_instance(svc, 0.0, None, Req()) is None  # hold it
    assert admission.hold(svc, 1) is None
    r = rejected(admission.hold(svc, 2), 450)
    assert "scaled to zero" in r.message and r.reason == "queue"


def test_429_when_every_instance_is_over_its_own_qps() -> None:
    svc = entry(instance_rate_limit=1)
    a, b = svc.upstreams
    first = admission.pick_instance(svc, 0.0, None, Req())
    second = admission.pick_instance(svc, 0.0, None, Req())
    assert {first, second} == {a, b}  # the second skips the instance whose bucket is empty
    r = rejected(admission.pick_instance(svc, 0.0, None, Req()), 429)
    assert "instance rate limit of 1" in r.message and r.headers == b"Retry-After: 1\r\n"


def test_slot_send_queue_or_450() -> None:
    svc = entry(worker_threads=1, max_queue_size=1)
    state = svc.upstreams[0]
    assert admission.slot(svc, state) == SEND_NOW
    state.active = state.outstanding = 1
    assert admission.slot(svc, state) == QUEUE
    state.outstanding = 2
    r = rejected(admission.slot(svc, state), 450)
    assert "worker_threads" in r.message and "max_queue_size" in r.message


# == failures under way ===================================================================


def test_timeouts_and_a_closed_instance() -> None:
    svc = entry()
    r = rejected(admission.timed_out(svc, held=False), 408)
    assert "2500 ms" in r.message and r.reason == "timeout"
    r = rejected(admission.timed_out(svc, held=True), 503)
    assert r.headers == b"Retry-After: 1\r\n" and "scaled to zero" in r.message
    assert rejected(admission.connect_timed_out(svc), 504).reason == "timeout"
    assert "closed the connection" in rejected(admission.instance_closed(svc), 503).message
    assert "'svc'" in rejected(admission.service_gone("svc"), 404).message


def test_400_bad_request_closes() -> None:
    r = rejected(admission.bad_request(), 400)
    assert r.close and "not valid HTTP" in r.message and r.reason == "bad_request"
    assert rejected(admission.bad_request("the head is too large"), 400).message == "the head is too large"
