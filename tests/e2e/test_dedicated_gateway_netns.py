"""Who reaches what: callers in two network namespaces made here, one playing "the Internet" and
one "the VPC", against a dedicated gateway listening on the root side of their veth links.

The gateway's Internet listener is on the Internet link's root-side address, its intranet (VPC)
listener on the VPC link's; each namespace can route to both addresses (tests/e2e/netns.py), so
what keeps a caller out is the gateway's allow-list (403, checked on the TCP peer) or the absence
of a listener (connection refused), never the routing.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.netns import Namespaces, network_namespaces
from tests.e2e.test_dedicated_gateway import create_gateway, fast_app_spec
from tests.harness import Server

GW = "gw-ns"
CURL_REFUSED = 7
OUTSIDER = "192.0.2.7"  # TEST-NET-1: a caller that is nowhere here, named in X-Forwarded-For


@pytest.fixture(scope="module")
def ns() -> Iterator[Namespaces]:
    with network_namespaces() as namespaces:
        yield namespaces


def free_port_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(server: Server, ns: Namespaces, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    internet = f"{ns.inet.root_ip}:{free_port_on(ns.inet.root_ip)}"
    intranet = f"{ns.vpc.root_ip}:{free_port_on(ns.vpc.root_ip)}"
    spec = {
        "name": GW,
        "enable_internet": True,
        "enable_intranet": True,
        "listen": {"internet": internet, "intranet": intranet},
        "internet_acl": [{"entry": f"{ns.inet.ns_ip}/32", "comment": "the Internet caller"}],
        "intranet_acl": [{"entry": ns.vpc.subnet, "comment": "the VPC"}],
    }
    view = create_gateway(server, tmp_path_factory.mktemp("gwns"), spec)
    assert view["endpoints"] == {"internet": f"http://{internet}", "intranet": f"http://{intranet}"}
    return view


@pytest.fixture(scope="module")
def svc(server: Server, gateway: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("nssvc")
    return server.deploy(fast_app_spec("netsvc", tmp, GW), tmp)


def call(ns: Namespaces, side: Any, url: str, token: str, *extra: str) -> tuple[int, str, int]:
    return ns.curl(side, url + "/pid", "-H", f"Authorization: {token}", *extra)


def wait_status(
    server: Server, ns: Namespaces, side: Any, url: str, token: str, status: int, *extra: str
) -> tuple[int, str, int]:
    """Poll until the caller sees `status` (allow-list changes apply within ~100 ms)."""
    out: tuple[int, str, int] = server.wait_for(
        lambda: (r := call(ns, side, url, token, *extra)) and r[0] == status and r,
        timeout=10,
        what=f"HTTP {status} from {url}",
    )
    return out


def assert_403(result: tuple[int, str, int], caller_ip: str, acl_field: str) -> None:
    status, body, _ = result
    assert status == 403, result
    error = json.loads(body)
    assert error["code"] == 403 and caller_ip in error["message"] and acl_field in error["message"], error


def test_each_caller_reaches_what_the_allow_lists_permit(
    server: Server, ns: Namespaces, svc: dict[str, Any]
) -> None:
    token = svc["token"]
    internet, vpc = svc["endpoints"]["internet"], svc["endpoints"]["vpc"]
    # the Internet caller: its IP is in internet_acl
    status, body, _ = call(ns, ns.inet, internet, token)
    assert status == 200 and "pid" in json.loads(body)
    # ... but it is not in the VPC: the intranet listener refuses it
    assert_403(call(ns, ns.inet, vpc, token), ns.inet.ns_ip, "intranet_acl")
    # the VPC caller: in intranet_acl, not in internet_acl
    assert call(ns, ns.vpc, vpc, token)[0] == 200
    assert_403(call(ns, ns.vpc, internet, token), ns.vpc.ns_ip, "internet_acl")
    # neither namespace reaches the shared gateway (it listens on the host's loopback only)
    shared = f"http://127.0.0.1:{server.gateway_port}/api/predict/netsvc"
    for side in (ns.inet, ns.vpc):
        assert call(ns, side, shared, token)[2] == CURL_REFUSED


def test_allow_list_changes_apply_live_and_xff_counts_only_from_trusted_proxies(
    server: Server, ns: Namespaces, svc: dict[str, Any]
) -> None:
    token, internet = svc["token"], svc["endpoints"]["internet"]
    pids = server.cli_json("gateway", "desc", GW)["pids"]
    acl = json.dumps([{"entry": f"{OUTSIDER}/32", "comment": "behind a proxy"}])
    server.cli_json("gateway", "modify", GW, "-D", f"internet_acl={acl}")
    assert_403(wait_status(server, ns, ns.inet, internet, token, 403), ns.inet.ns_ip, "internet_acl")
    # X-Forwarded-For from a caller that is not a trusted proxy decides nothing
    xff = ("-H", f"X-Forwarded-For: {OUTSIDER}")
    assert call(ns, ns.inet, internet, token, *xff)[0] == 403
    # once the Internet caller is a trusted proxy, the address it forwards for is what is checked
    proxies = json.dumps([{"entry": f"{ns.inet.ns_ip}/32", "comment": "our proxy"}])
    server.cli_json("gateway", "modify", GW, "-D", f"trusted_proxies={proxies}")
    wait_status(server, ns, ns.inet, internet, token, 200, *xff)
    assert call(ns, ns.inet, internet, token, "-H", "X-Forwarded-For: 192.0.2.8")[0] == 403
    assert call(ns, ns.inet, internet, token)[0] == 403  # the proxy itself is not in the list
    # all of it without a restart
    assert server.cli_json("gateway", "desc", GW)["pids"] == pids
    # back to the Internet caller only
    acl = json.dumps([{"entry": f"{ns.inet.ns_ip}/32"}])
    server.cli_json("gateway", "modify", GW, "-D", f"internet_acl={acl}", "-D", "trusted_proxies=[]")
    wait_status(server, ns, ns.inet, internet, token, 200)


def test_a_disabled_access_method_has_no_listener(
    server: Server, ns: Namespaces, svc: dict[str, Any], tmp_path: Path
) -> None:
    token = svc["token"]
    internet, vpc = svc["endpoints"]["internet"], svc["endpoints"]["vpc"]
    view = server.cli_json("gateway", "modify", GW, "-D", "enable_internet=false", "--wait")
    assert view["endpoints"]["internet"] is None and view["status"] == "Running"
    assert list(view["listeners"]) == ["intranet"]
    status, _, code = call(ns, ns.inet, internet, token)
    assert (status, code) == (0, CURL_REFUSED)  # nothing listens there any more
    assert call(ns, ns.vpc, vpc, token)[0] == 200
    # the service's endpoints show only what exists
    shown = server.cli_json("endpoints", "netsvc")["endpoints"]
    assert shown == {"internet": None, "vpc": vpc}
    text = server.cli("endpoints", "netsvc").stdout
    assert "VPC endpoint" in text and vpc in text and "Internet endpoint" not in text
    # and back on: the Internet caller gets in again
    server.cli_json("gateway", "modify", GW, "-D", "enable_internet=true", "--wait")
    assert call(ns, ns.inet, internet, token)[0] == 200
    assert call(ns, ns.vpc, internet, token)[0] == 403
