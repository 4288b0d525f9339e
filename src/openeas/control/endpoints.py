"""The endpoints a gateway offers: base URLs per access method, and a service's endpoints.

Pure functions over the gateway record's spec (no I/O), shared by the service and gateway views.

A gateway's base URL for an access method (`internet` / `intranet`) is, in order:

1. `advertise.<kind>` from the record (what callers use when the listener sits behind NAT or a
   load balancer, or has a DNS name);
2. else derived from the address the listener is bound to (the gateway's ready line: real port
   even when the record says port 0), or from `listen.<kind>` before it is bound:
   `http(s)://host:port`, with `https` when the gateway has `tls`, and a wildcard host
   (0.0.0.0, ::) shown as 127.0.0.1.

An access method that is off (or has no listener) has no base URL: None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KINDS = ("internet", "intranet")
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def access_enabled(spec: Mapping[str, Any], kind: str) -> bool:
    """The gateway's rule: `enable_<kind>`, or (absent) whether it has a listen address."""
    listen = _obj(spec.get("listen"))
    flag = spec.get(f"enable_{kind}")
    on = bool(listen.get(kind)) if flag is None else bool(flag)
    return on and bool(listen.get(kind))


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def client_host(host: str) -> str:
    """The address a local caller uses for a listener bound to `host`."""
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    return f"[{host}]" if ":" in host else host


def gateway_bases(spec: Mapping[str, Any], bound: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """{"internet": base URL | None, "intranet": base URL | None} for a gateway record's spec."""
    advertise, listen = _obj(spec.get("advertise")), _obj(spec.get("listen"))
    scheme = "https" if spec.get("tls") else "http"
    out: dict[str, str | None] = {}
    for kind in KINDS:
        out[kind] = None
        if not access_enabled(spec, kind):
            continue
        if advertise.get(kind):
            out[kind] = str(advertise[kind]).rstrip("/")
            continue
        address = (bound or {}).get(kind) or str(listen.get(kind))
        host, port = split_hostport(address)
        if port:  # port 0 is known only once the listener is bound
            out[kind] = f"{scheme}://{client_host(host)}:{port}"
    return out


def service_endpoints(bases: Mapping[str, str | None], service: str) -> dict[str, str | None]:
    """A service's endpoints on its gateway: `internet` and `vpc` keys, None where that access
    method is off on the gateway (EAS shows only the endpoints that exist)."""
    internet, intranet = bases.get("internet"), bases.get("intranet")
    return {
        "internet": f"{internet}/api/predict/{service}" if internet else None,
        "vpc": f"{intranet}/api/predict/{service}" if intranet else None,
    }
