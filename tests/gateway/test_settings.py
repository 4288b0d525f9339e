"""Pure pieces of dedicated gateways: settings from the record, allow-lists, token buckets."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from openeas.gateway import Gateway
from openeas.gateway.acl import Acl, client_address, parse_address
from openeas.gateway.limits import GroupBuckets, ServiceLimits, TokenBucket, keep_bucket
from openeas.gateway.snapshot import Listener, RoutingSnapshot, gateway_settings, service_route
from openeas.spec import SpecError, shared_gateway_spec
from openeas.store import GatewayRecord


def _record(name: str, spec: dict[str, Any]) -> GatewayRecord:
    now = time.time()
    return GatewayRecord(name, spec, "Running", now, now)


def test_shared_record_as_the_control_plane_writes_it() -> None:
    spec = shared_gateway_spec("0.0.0.0:8880", "127.0.0.1:8881", "http://h:8880", "http://127.0.0.1:8881")
    settings = gateway_settings(_record("shared", spec.to_json()))
    assert settings.listeners == (
        Listener("internet", "0.0.0.0", 8880),
        Listener("intranet", "127.0.0.1", 8881),
    )
    assert (settings.rate_limit, settings.group_rate_limit) == (1000, 10000)
    assert settings.internet_acl == ("0.0.0.0/0",) and Acl(settings.internet_acl).allow_all
    assert settings.intranet_acl is None and settings.tls is None and not settings.ssl_redirect


def test_shared_record_without_limits_gets_the_eas_defaults() -> None:
    spec = {"listen": {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"}, "max_body_bytes": 2048}
    settings = gateway_settings(_record("shared", spec))
    assert (settings.rate_limit, settings.group_rate_limit) == (1000, 10000)
    assert settings.max_body_bytes == 2048 and len(settings.listeners) == 2
    assert settings.internet_acl is None  # nothing said: anyone
    # an explicit 0 on the shared gateway means no limit; dedicated gateways have none by default
    assert gateway_settings(_record("shared", {**spec, "rate_limit": 0})).rate_limit == 0
    dedicated = gateway_settings(_record("gw1", spec))
    assert (dedicated.rate_limit, dedicated.group_rate_limit) == (0, 0)


def test_dedicated_record_fields() -> None:
    spec = {
        "enable_internet": False,
        "enable_intranet": True,
        "listen": {"internet": "127.0.0.1:9000", "intranet": "[::1]:9001"},
        "internet_acl": [{"entry": "203.0.113.0/24"}],
        "intranet_acl": [{"entry": "10.0.0.0/8", "comment": "vpc"}],
        "trusted_proxies": [{"entry": "10.9.9.9"}],
        "tls": {"cert": "/c.pem", "key": "/k.pem", "domains": ["api.example.com"]},
        "ssl_redirect": True,
        "rate_limit": 50,
    }
    settings = gateway_settings(_record("gw2", spec))
    assert settings.listeners == (Listener("intranet", "::1", 9001),)  # Internet disabled: no listener
    assert settings.internet_acl == ("203.0.113.0/24",) and settings.intranet_acl == ("10.0.0.0/8",)
    assert settings.trusted_proxies == ("10.9.9.9/32",)
    assert settings.tls is not None and settings.tls.domains == ("api.example.com",)
    assert settings.ssl_redirect and settings.rate_limit == 50


def test_invalid_record_names_the_field() -> None:
    with pytest.raises(SpecError) as exc:
        gateway_settings(
            _record("gw3", {"listen": {"internet": "127.0.0.1:1"}, "internet_acl": [{"entry": "x"}]})
        )
    assert "internet_acl" in str(exc.value)
    with pytest.raises(SpecError):
        gateway_settings(_record("gw3", {"listen": {}}))  # nobody served


def test_record_name_outside_the_spec_rules_is_tolerated() -> None:
    settings = gateway_settings(_record("Old_GW", {"listen": {"intranet": "127.0.0.1:0"}}))
    assert settings.name == "Old_GW" and settings.listeners == (Listener("intranet", "127.0.0.1", 0),)


def test_listener_changes_need_a_restart_limits_do_not(caplog: pytest.LogCaptureFixture) -> None:
    spec: dict[str, Any] = {"listen": {"internet": "127.0.0.1:0"}, "rate_limit": 5}
    settings = gateway_settings(_record("gw4", spec))
    gw = Gateway(settings, RoutingSnapshot(1, {}, settings))
    changed = gateway_settings(
        _record("gw4", {**spec, "listen": {"internet": "127.0.0.1:9"}, "rate_limit": 7, "internet_acl": []})
    )
    with caplog.at_level(logging.WARNING, logger="openeas.gateway"):
        gw.set_snapshot(RoutingSnapshot(2, {}, changed))
        gw.set_snapshot(RoutingSnapshot(3, {}, changed))
    warnings = [r.getMessage() for r in caplog.records if "restart the gateway" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per change, not once per snapshot
    assert gw.settings.listeners == settings.listeners  # still what was bound
    assert gw.settings.rate_limit == 7 and not gw.access["internet"].open  # applied now
    gw.set_snapshot(RoutingSnapshot(4, {}, None, "the gateway record 'gw4' is gone from the store"))
    assert gw.settings.rate_limit == 7  # a missing record keeps what is in use


def test_service_route_reads_limits_with_eas_defaults() -> None:
    route = service_route("s", "t", {"metadata": {"name": "s"}}, (), "Running")
    assert (route.worker_threads, route.max_queue_size, route.instance_rate_limit) == (5, 64, 0)
    assert route.rate_limit is None and route.concurrency_limit == 0 and route.timeout_s == 5.0
    spec = {
        "metadata": {
            "name": "s",
            "group": "g",
            "rpc": {"keepalive": 1500, "worker_threads": 2, "max_queue_size": 3, "rate_limit": 7},
        },
        "networking": {
            "gateway_policy": {
                "rate_limit": {"enable": True, "limit": 9},
                "concurrency_limit": {"enable": False, "limit": 4},
            }
        },
    }
    route = service_route("s", "t", spec, (), "Running")
    assert (route.worker_threads, route.max_queue_size, route.instance_rate_limit) == (2, 3, 7)
    assert (route.rate_limit, route.concurrency_limit, route.group, route.timeout_s) == (9, 0, "g", 1.5)


def test_acl() -> None:
    acl = Acl(["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"])
    assert acl.allows("10.1.2.3") and acl.allows("192.168.1.7") and acl.allows("2001:db8::1")
    assert not acl.allows("192.168.1.8") and not acl.allows("11.0.0.1") and not acl.allows("::1")
    assert acl.allows("::ffff:10.0.0.1")  # what a dual-stack socket reports for an IPv4 caller
    assert not acl.allows("not-an-address") and not acl.allows("")
    assert Acl(None).allow_all and Acl(["0.0.0.0/0"]).allows("::1") and Acl(["::/0"]).allows("1.2.3.4")
    nobody = Acl([])
    assert not nobody and not nobody.allows("127.0.0.1")
    assert parse_address("[::1]:80") == parse_address("::1")
    assert str(parse_address("1.2.3.4:5678")) == "1.2.3.4"


def test_client_address_from_trusted_proxies_only() -> None:
    trusted = Acl(["10.0.0.1", "10.0.0.2"])
    # an untrusted peer: its X-Forwarded-For is ignored
    assert client_address("8.8.8.8", b"1.1.1.1", trusted) == "8.8.8.8"
    # a trusted peer: the right-most address that is not a trusted proxy
    assert client_address("10.0.0.1", b"1.1.1.1", trusted) == "1.1.1.1"
    assert client_address("10.0.0.1", b"6.6.6.6, 1.1.1.1, 10.0.0.2", trusted) == "1.1.1.1"
    assert client_address("10.0.0.1", b"10.0.0.2", trusted) == "10.0.0.2"  # all trusted: left-most
    assert client_address("10.0.0.1", None, trusted) == "10.0.0.1"
    assert client_address("10.0.0.1", b"1.1.1.1", Acl([])) == "10.0.0.1"  # no trusted proxies


def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(5)
    assert [bucket.take(100.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert bucket.retry_after() == 1
    assert not bucket.take(100.1)  # half a token
    assert bucket.take(100.2) and not bucket.take(100.2)  # one token per 1/5 s
    assert sum(bucket.take(200.0) for _ in range(10)) == 5  # refilled up to the burst, no more
    bucket.set_rate(2)
    assert sum(bucket.take(200.0) for _ in range(3)) == 0 and bucket.retry_after() == 1
    slow = TokenBucket(1)
    assert slow.take(0.0) and not slow.take(0.0)


def test_group_buckets_shared_by_name() -> None:
    groups = GroupBuckets()
    a, b = groups.get("g", 10), groups.get("g", 10)
    assert a is b and groups.get(None, 10) is None and groups.get("g", 0) is None
    groups.keep_only(set())
    assert groups.get("g", 10) is not a


def test_every_bucket_is_kept_across_snapshots_the_same_way() -> None:
    """keep_bucket: the one rule for service, group and instance buckets under a new snapshot."""
    assert keep_bucket(None, 0) is None and keep_bucket(TokenBucket(3), -1) is None
    bucket = keep_bucket(None, 3)
    assert bucket is not None and [bucket.take(0.0) for _ in range(4)] == [True] * 3 + [False]
    again = keep_bucket(bucket, 5)  # the rate changes, the drained tokens do not come back
    assert again is bucket and again.rate == 5.0 and not again.take(0.0)
    limits = ServiceLimits()
    limits.configure(3, None, None, 0)
    first = limits.bucket
    limits.configure(4, None, None, 0)
    assert limits.bucket is first and limits.active
    limits.configure(0, None, None, 0)
    assert limits.bucket is None and not limits.active
