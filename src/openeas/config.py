"""Where things live and which ports they use. One object, passed in; no globals."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_API_PORT = 8800
DEFAULT_GATEWAY_PORT = 8880
DEFAULT_VPC_PORT = 8881
ADMIN_TOKEN_FILE = "admin_token"
SERVER_FILE = "server.json"  # written by a running server: {"api": "http://...", "pid": N}
# URLs that can hold a password travel to the processes openeas starts in these variables, never
# on their command line (every local user reads command lines in ps and /proc/<pid>/cmdline)
STORE_URL_ENV = "OPENEAS_STORE_URL"
REDIS_URL_ENV = "OPENEAS_REDIS_URL"


def default_data_dir() -> Path:
    env = os.environ.get("OPENEAS_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".openeas"


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    api_host: str = "127.0.0.1"
    api_port: int = DEFAULT_API_PORT
    # The shared gateway's two listeners. "Internet" and "VPC" are separate sockets so that
    # allow-lists and exposure can differ; by default both bind loopback (nothing is exposed
    # until the operator says so with --internet-bind).
    internet_bind: str = "127.0.0.1"
    gateway_port: int = DEFAULT_GATEWAY_PORT
    vpc_bind: str = "127.0.0.1"
    vpc_port: int = DEFAULT_VPC_PORT
    # Host names printed in endpoints (what callers use to reach the listeners).
    internet_host: str = "127.0.0.1"
    vpc_host: str = "127.0.0.1"
    region: str = "local"
    store_url: str | None = None  # default: SQLite in data_dir
    redis_url: str = ""  # Redis for shared gateway limits and Async queues (default: neither)
    runtime: str = "local"  # where instances run: "local" (subprocesses here) or "ray"
    ray_address: str | None = None  # the Ray head's HOST:PORT, for runtime "ray"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"


def ensure_admin_token(data_dir: Path) -> str:
    """Read the admin token from the data dir, creating it (mode 0600) on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
