"""Gateway spec: the shared gateway and dedicated ones (eas-reference section 1).

A dedicated gateway is created before the services that use it; its Internet access is off by
default (EAS: EnableInternet false), VPC (intranet) access on. Allow-lists are CIDR lists checked
against the TCP peer address.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from openeas.spec.errors import SpecError, from_validation_error

GATEWAY_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
SHARED_MAX_BODY_BYTES = 1024 * 1024
SHARED_SERVICE_QPS = 1000
SHARED_GROUP_QPS = 10000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AclEntry(_Strict):
    entry: str
    comment: str = ""

    @field_validator("entry")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ValueError("not a CIDR block such as 10.0.0.0/8 or 192.168.1.7/32") from None


class ListenSpec(_Strict):
    internet: str | None = None  # host:port
    intranet: str | None = None
    # the metrics listener (/metrics, /stats); absent: 127.0.0.1, any free port. With N workers,
    # worker i listens on port + i (port 0: each its own free port).
    metrics: str | None = None

    @field_validator("internet", "intranet", "metrics")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port, for example 127.0.0.1:9000")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if not re.match(r"^[A-Za-z0-9.-]+$", host):
                raise ValueError("the host is not an IP address or a host name") from None
        return v


class TlsSpec(_Strict):
    cert: str  # PEM certificate chain file
    key: str  # PEM private key file
    domains: list[str] = Field(default_factory=list)  # custom domains (SNI / Host)


class BoundsSpec(_Strict):
    """Resource bounds of the gateway's client connections (gateway/bounds.py has the defaults)."""

    head_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    idle_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    min_body_rate: Annotated[int, Field(ge=0)] = 1024  # bytes/s; 0: no minimum
    body_rate_window_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    max_head_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 64 * 1024
    max_header_count: Annotated[int, Field(ge=8, le=10000)] = 100
    max_connections: Annotated[int, Field(ge=1)] = 16384
    max_connections_per_client: Annotated[int, Field(ge=1)] = 4096
    max_response_head_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 64 * 1024


class GatewaySpec(_Strict):
    name: str
    enable_internet: bool = False
    enable_intranet: bool = True
    listen: ListenSpec = Field(default_factory=ListenSpec)
    advertise: dict[str, str] = Field(default_factory=dict)  # {"internet": url, "intranet": url}
    internet_acl: list[AclEntry] = Field(default_factory=lambda: [AclEntry(entry="0.0.0.0/0")])
    intranet_acl: list[AclEntry] = Field(default_factory=list)  # empty: any VPC caller
    trusted_proxies: list[AclEntry] = Field(default_factory=list)  # X-Forwarded-For trusted from these
    max_body_bytes: Annotated[int, Field(ge=1, le=1024 * 1024 * 1024)] = SHARED_MAX_BODY_BYTES
    rate_limit: Annotated[int, Field(ge=0)] = 0  # QPS per service, 0 = none
    group_rate_limit: Annotated[int, Field(ge=0)] = 0
    tls: TlsSpec | None = None
    ssl_redirect: bool = False
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    replicas: Annotated[int, Field(ge=1, le=16)] = 1
    bounds: BoundsSpec = Field(default_factory=BoundsSpec)  # client connection limits and timeouts

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not GATEWAY_NAME_RE.match(v):
            raise ValueError("a gateway name is a lowercase letter, then lowercase letters, digits, _ or -")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySpec:
        if self.enable_internet and not self.listen.internet:
            raise ValueError("enable_internet needs listen.internet (host:port)")
        if self.enable_intranet and not self.listen.intranet:
            raise ValueError("enable_intranet needs listen.intranet (host:port)")
        if not (self.enable_internet or self.enable_intranet):
            raise ValueError("a gateway with neither Internet nor intranet access serves nobody")
        if self.ssl_redirect and self.tls is None:
            raise ValueError("ssl_redirect needs `tls` (a certificate to redirect to)")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def parse_gateway_spec(data: Any) -> GatewaySpec:
    if not isinstance(data, dict):
        raise SpecError.one("(top level)", "a gateway spec is a JSON object")
    try:
        return GatewaySpec.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def shared_gateway_spec(
    internet_listen: str, intranet_listen: str, internet_url: str, intranet_url: str
) -> GatewaySpec:
    """The shared gateway: Internet and VPC on, 1 MiB bodies, 1,000 QPS/service, 10,000/group."""
    return GatewaySpec(
        name="shared",
        enable_internet=True,
        enable_intranet=True,
        listen=ListenSpec(internet=internet_listen, intranet=intranet_listen),
        advertise={"internet": internet_url, "intranet": intranet_url},
        max_body_bytes=SHARED_MAX_BODY_BYTES,
        rate_limit=SHARED_SERVICE_QPS,
        group_rate_limit=SHARED_GROUP_QPS,
    )
