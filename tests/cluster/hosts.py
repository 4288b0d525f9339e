"""Several "hosts" on one machine for the cluster tests: network namespaces on one bridge.

    root namespace (host A)   oeb<id>      P.1/24   the bridge itself carries A's address
    oe-h<id>-b (host B)       oeB<id>n     P.2/24   veth oeB<id>r enslaved to the bridge
    oe-h<id>-c (host C)       oeC<id>n     P.3/24   ...

P is a /24 of 198.18.0.0/15 (RFC 2544 benchmark range: never routed) not already on an
interface here. Every host reaches every other one directly on the /24; nothing else is routed.
Host A is the root namespace so the test process itself can be a Ray driver on the head node
(a Ray driver must run on a node of the cluster). Processes and files are shared by all hosts:
only the network is separate, which is what a placement or node-loss test needs.

`hosts()` removes the namespaces, links and bridge when it exits, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tests.e2e.netns import _ip, _used_octets


@dataclass(frozen=True)
class Host:
    name: str  # "a", "b", ...
    ip: str
    namespace: str | None  # None: the root namespace

    def command(self, *cmd: str) -> list[str]:
        """`cmd` as run on this host."""
        return list(cmd) if self.namespace is None else ["ip", "netns", "exec", self.namespace, *cmd]

    def net_inode(self) -> int:
        """The inode of this host's network namespace (to tell its processes apart)."""
        path = "/proc/self/ns/net" if self.namespace is None else f"/run/netns/{self.namespace}"
        return os.stat(path).st_ino


def processes_on(host: Host) -> list[int]:
    """Pids of the live processes in `host`'s network namespace."""
    inode = host.net_inode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != inode:
                continue
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            out.append(int(entry))
    return out


@contextlib.contextmanager
def hosts(names: Sequence[str] = ("a", "b", "c")) -> Iterator[dict[str, Host]]:
    """`names[0]` is the root namespace, the others get a namespace each; all on one bridge."""
    tag = secrets.token_hex(3)
    used = _used_octets()
    n = random.choice([x for x in range(512) if x not in used])
    prefix = f"198.{18 + n // 256}.{n % 256}"
    bridge = f"oeb{tag}"
    namespaces: list[str] = []
    links: list[str] = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        links.append(bridge)
        _ip("addr", "add", f"{prefix}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        out = {names[0]: Host(names[0], f"{prefix}.1", None)}
        for i, name in enumerate(names[1:], start=2):
            ns = f"oe-h{tag}-{name}"
            _ip("netns", "add", ns)
            namespaces.append(ns)
            root_if, ns_if = f"oe{name.upper()}{tag}r", f"oe{name.upper()}{tag}n"
            _ip("link", "add", root_if, "type", "veth", "peer", "name", ns_if)
            links.append(root_if)
            _ip("link", "set", root_if, "master", bridge)
            _ip("link", "set", root_if, "up")
            _ip("link", "set", ns_if, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{prefix}.{i}/24", "dev", ns_if)
            _ip("-n", ns, "link", "set", ns_if, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            out[name] = Host(name, f"{prefix}.{i}", ns)
        yield out
    finally:
        for link in reversed(links):
            _ip("link", "del", link, check=False)
        for ns in namespaces:
            _ip("netns", "del", ns, check=False)


def run_on(host: Host, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(host.command(*cmd), capture_output=True, text=True, timeout=timeout)
