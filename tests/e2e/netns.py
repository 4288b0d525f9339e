"""Two network namespaces for the access tests: one plays "the Internet", one "the VPC".

Each namespace is joined to the root namespace by a veth pair on its own /30 picked at random from
198.18.0.0/15 (the benchmark range, RFC 2544: never routed, unused on this machine; a /30 already
present on an interface is skipped):

    root  oeI<id>r 198.18.A.1/30  <->  oeI<id>n 198.18.A.2/30  in oe-inet-<id>
    root  oeV<id>r 198.18.B.1/30  <->  oeV<id>n 198.18.B.2/30  in oe-vpc-<id>

The gateway listens on the root-side addresses (A.1 for the Internet listener, B.1 for the
intranet one). Each namespace also gets a host route to the other root-side address, so a caller
can reach the other listener at the IP level and what keeps it out is the gateway's allow-list,
not the routing. Nothing else is routed: traffic stays on these links (and loopback).

`network_namespaces()` removes both namespaces and veth pairs when it exits, also on failure, and
skips the test (with the reason) only when `ip netns add` is not permitted here.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Side:
    namespace: str
    root_if: str
    ns_if: str
    root_ip: str  # the gateway listens here (root namespace)
    ns_ip: str  # the caller's address
    subnet: str  # the /30


@dataclass(frozen=True)
class Namespaces:
    inet: Side
    vpc: Side

    def run(self, side: Side, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace (never raises on its exit code)."""
        return subprocess.run(
            ["ip", "netns", "exec", side.namespace, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def curl(self, side: Side, url: str, *args: str, timeout: float = 5) -> tuple[int, str, int]:
        """curl from inside a namespace: (HTTP status or 0, body, curl's exit code).

        Exit code 7 is "connection refused" (no listener), 28 a timeout."""
        out = self.run(
            side,
            "curl", "-sS", "--max-time", str(timeout), "-o", "-", "-w", "\n%{http_code}", *args, url,
            timeout=timeout + 10,
        )  # fmt: skip
        body, _, code = out.stdout.rpartition("\n")
        return int(code) if code.isdigit() else 0, body, out.returncode


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def _used_octets() -> set[int]:
    """Third octets of 198.18.X.* / 198.19.X.* addresses already on this machine's interfaces."""
    out = _ip("-4", "-o", "addr", "show", check=False).stdout
    used = set()
    for word in out.split():
        if word.startswith(("198.18.", "198.19.")):
            parts = word.split(".")
            used.add((int(parts[1]) - 18) * 256 + int(parts[2]))
    return used


def _subnets(count: int) -> list[tuple[str, str, str]]:
    """`count` distinct free /30s of 198.18.0.0/15: (subnet, root-side IP, namespace-side IP)."""
    used = _used_octets()
    free = [n for n in range(512) if n not in used]
    out = []
    for n in random.sample(free, count):
        prefix = f"198.{18 + n // 256}.{n % 256}"
        out.append((f"{prefix}.0/30", f"{prefix}.1", f"{prefix}.2"))
    return out


def _remove(namespaces: list[str], root_ifs: list[str]) -> None:
    for link in root_ifs:
        _ip("link", "del", link, check=False)  # deletes both ends of the pair
    for ns in namespaces:
        _ip("netns", "del", ns, check=False)


@contextlib.contextmanager
def network_namespaces() -> Iterator[Namespaces]:
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed, so no network namespaces")
    tag = secrets.token_hex(3)
    inet_ns, vpc_ns = f"oe-inet-{tag}", f"oe-vpc-{tag}"
    probe = _ip("netns", "add", inet_ns, check=False)
    if probe.returncode != 0:
        pytest.skip(f"`ip netns add` is not permitted here ({probe.stderr.strip()}); run as root")
    created_ns = [inet_ns]
    created_links: list[str] = []
    try:
        _ip("netns", "add", vpc_ns)
        created_ns.append(vpc_ns)
        (inet_net, inet_root, inet_peer), (vpc_net, vpc_root, vpc_peer) = _subnets(2)
        sides = []
        for letter, ns, subnet, root_ip, ns_ip in (
            ("I", inet_ns, inet_net, inet_root, inet_peer),
            ("V", vpc_ns, vpc_net, vpc_root, vpc_peer),
        ):
            root_if, ns_if = f"oe{letter}{tag}r", f"oe{letter}{tag}n"
            _ip("link", "add", root_if, "type", "veth", "peer", "name", ns_if)
            created_links.append(root_if)
            _ip("link", "set", ns_if, "netns", ns)
            _ip("addr", "add", f"{root_ip}/30", "dev", root_if)
            _ip("link", "set", root_if, "up")
            _ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
            _ip("-n", ns, "link", "set", ns_if, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            sides.append(Side(ns, root_if, ns_if, root_ip, ns_ip, subnet))
        inet, vpc = sides
        # each caller can reach the other listener's address: the allow-list decides, not routing
        _ip("-n", inet.namespace, "route", "add", f"{vpc.root_ip}/32", "via", inet.root_ip)
        _ip("-n", vpc.namespace, "route", "add", f"{inet.root_ip}/32", "via", vpc.root_ip)
        yield Namespaces(inet, vpc)
    finally:
        _remove(created_ns, created_links)
