"""Helpers of the gateway tests: a registry with services and instances, SDK-signed headers, raw
sockets, TLS certificates. The processes (upstreams, `python -m openeas.gateway`) are started by
the shared harness, tests/harness.py, re-exported here for the tests that import them from here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from openeas.store import InstanceRecord, Registry, sqlite_url
from tests.harness import GatewayProc, Upstream, free_port, start_gateway, start_upstream
from tests.harness import read_line as _read_line

HERE = Path(__file__).resolve().parent

__all__ = ["GatewayProc", "Upstream", "_read_line", "free_port", "start_gateway", "start_upstream"]


def make_registry(data_dir: Path) -> Registry:
    data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(sqlite_url(data_dir))
    registry.create_schema()
    return registry


def add_service(
    registry: Registry,
    name: str,
    token: str,
    ports: list[int],
    keepalive_ms: int = 5000,
    gateway: str = "shared",
    extra: dict[str, Any] | None = None,
) -> None:
    """A service with ready instances on `ports`; `extra` is merged into its spec (nested dicts)."""
    spec: dict[str, Any] = {
        "metadata": {"name": name, "instance": len(ports), "rpc": {"keepalive": keepalive_ms}}
    }
    _merge(spec, extra or {})
    registry.create_service(name, spec, token, gateway)
    for i, port in enumerate(ports):
        add_instance(registry, name, f"{name}-{i}", port)
    registry.set_status(name, "Running" if ports else "Waiting")


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def add_instance(registry: Registry, service: str, instance_id: str, port: int, state: str = "ready") -> None:
    now = time.time()
    registry.put_instance(
        InstanceRecord(instance_id, service, 1, "127.0.0.1", port, None, state, 0, "", now, now)
    )


def sdk_headers(
    token: str, service: str, body: bytes, content_type: str = "application/octet-stream"
) -> dict[str, str]:
    """The headers the Python eas-prediction SDK sends (PredictClient.generate_singaure)."""
    date = formatdate(usegmt=True)
    md5 = hashlib.md5(body).hexdigest()
    to_sign = f"POST\n{md5}\n{content_type}\n{date}\n/api/predict/{service}"
    digest = hmac.new(token.encode(), to_sign.strip().encode(), hashlib.sha1).digest()
    return {
        "Content-MD5": md5,
        "Date": date,
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Authorization": "EAS " + base64.b64encode(digest).decode(),
    }


def raw_exchange(port: int, data: bytes, timeout: float = 10, until_close: bool = True) -> bytes:
    """Send raw bytes, read until the server closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if not until_close:
                break
        return out


def read_responses(sock: socket.socket, n: int) -> list[tuple[bytes, bytes]]:
    """Read n Content-Length-framed responses from a socket."""
    buf = b""
    out: list[tuple[bytes, bytes]] = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses: {buf!r}"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            rest += chunk
        out.append((head, rest[:length]))
        buf = rest[length:]
    return out


class _SourceAdapter(HTTPAdapter):
    """Connections from a chosen local address (any of 127.0.0.0/8 works on loopback)."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(source: str) -> requests.Session:
    """A requests Session whose connections come from `source` (e.g. "127.0.0.2")."""
    session = requests.Session()
    adapter = _SourceAdapter(source)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def connect_from(source: str, port: int, timeout: float = 5) -> socket.socket:
    """A TCP connection from `source` to 127.0.0.1:port."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def make_cert(directory: Path, names: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for `names` (DNS names and IP addresses)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
