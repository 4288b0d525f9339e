"""Allow-lists: which caller addresses an access method (Internet, intranet) accepts (no I/O).

An `Acl` is compiled once per gateway settings from CIDR strings; `allows(address)` is a few
integer masks. `0.0.0.0/0` (or `::/0`) means anyone, of either address family: that is what EAS's
default Internet list says, and it makes the check free. The TCP peer is checked once per
connection, when it is accepted. Only when the peer is a trusted proxy (`trusted_proxies`) is the
client taken from `X-Forwarded-For`, per request: the right-most address in it that is not itself a
trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

_ANY = frozenset({"0.0.0.0/0", "::/0"})


class Acl:
    __slots__ = ("allow_all", "entries", "v4", "v6")

    def __init__(self, entries: Iterable[str] | None) -> None:
        """`entries`: CIDR blocks (a bare address is a /32 or /128); None: anyone."""
        self.entries: tuple[str, ...] | None = None if entries is None else tuple(entries)
        self.v4: list[tuple[int, int]] = []
        self.v6: list[tuple[int, int]] = []
        self.allow_all = self.entries is None
        for entry in self.entries or ():
            net = ipaddress.ip_network(entry.strip(), strict=False)
            if str(net) in _ANY:
                self.allow_all = True
            pair = (int(net.network_address), int(net.netmask))
            (self.v4 if net.version == 4 else self.v6).append(pair)

    def allows(self, address: str) -> bool:
        if self.allow_all:
            return True
        ip = parse_address(address)
        if ip is None:
            return False
        n = int(ip)
        return any(n & mask == net for net, mask in (self.v4 if ip.version == 4 else self.v6))

    def __bool__(self) -> bool:
        """True when the list names at least one network (an empty list allows nobody)."""
        return self.allow_all or bool(self.v4 or self.v6)


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address from a peer name or an X-Forwarded-For element, or None.

    Accepts `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`, `fe80::1%eth0`; an IPv4-mapped IPv6
    address (`::ffff:1.2.3.4`, what a dual-stack socket reports) becomes the IPv4 address.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(peer: str, xff: bytes | None, trusted: Acl) -> str:
    """The address the allow-list is checked against for a request from `peer`.

    `peer` itself unless it is a trusted proxy; then the right-most X-Forwarded-For element that is
    not a trusted proxy (the last hop a trusted party saw). When every element is trusted (or the
    header is absent), the left-most one (or the peer).
    """
    if not xff or not trusted or not trusted.allows(peer):
        return peer
    hops = [h.strip() for h in xff.decode("latin-1").split(",")]
    hops = [h for h in hops if h]
    for hop in reversed(hops):
        if not trusted.allows(hop):
            return hop
    return hops[0] if hops else peer
