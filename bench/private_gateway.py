"""A gateway process the bench starts itself, outside `openeas server`.

`python -m openeas.gateway` serving a private SQLite registry in the work dir that holds one
gateway record (listeners on port 0) and one service with one ready instance (the bench's
upstream): the server's control plane neither sees nor manages it. The gateway binds its ports
and names them in its ready line (tests/harness.py reads it), so no port is picked before it is
bound. Used by `python -m bench` (workers, access log, route-table growth) and by
`python -m bench.gateway_cpu` (two code trees side by side).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import parse_gateway_ready_line, wait_log_line

from bench.checks import call
from bench.procs import ProcessSet


class GatewayStartError(RuntimeError):
    """The gateway did not start, or did not answer the service's request with 200."""


@dataclass
class PrivateGateway:
    proc: subprocess.Popen[bytes]
    name: str
    port: int  # the Internet listener's
    store_url: str
    base: str  # http://127.0.0.1:<port>/api/predict/<service>


def start_private_gateway(
    procs: ProcessSet,
    work: Path,
    tag: str,
    *,
    service: str,
    service_spec: dict[str, Any],
    token: str,
    upstream_port: int,
    env: dict[str, str],
    workers: int = 1,
    access_log: bool = True,
    max_body_bytes: int = 1024 * 1024,
    extra_args: tuple[str, ...] = (),  # more `python -m openeas.gateway` flags (--redis-url ...)
) -> PrivateGateway:
    """Start gateway `bench_<tag>` serving `service` (spec `service_spec`, instance on
    `upstream_port`); returns once `GET <base>/get` with `token` answers 200."""
    from openeas.store import InstanceRecord, Registry, sqlite_url

    name = f"bench_{tag}"
    reg_dir = work / f"registry-{tag}"
    reg_dir.mkdir(exist_ok=True)
    store_url = sqlite_url(reg_dir)
    registry = Registry(store_url)
    try:
        registry.create_schema()
        listen = {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"}
        gateway = {"listen": listen, "enable_internet": True, "enable_intranet": True}
        registry.put_gateway(name, {**gateway, "max_body_bytes": max_body_bytes})
        registry.create_service(service, service_spec, token, name)
        registry.update_service(service, status="Running")
        now = time.time()
        registry.put_instance(
            InstanceRecord(
                f"{service}-{tag}", service, 1, "127.0.0.1", upstream_port, None, "ready", 0, "", now, now
            )
        )
    finally:
        registry.close()
    argv = [sys.executable, "-m", "openeas.gateway", "--store-url", store_url, "--name", name]
    if access_log:  # as the server runs its gateway
        argv += ["--access-log", str(work / f"gateway-{tag}-access.log")]
    if workers > 1:
        argv += ["--workers", str(workers)]
    argv += extra_args
    log_path = work / f"gateway-{tag}.log"
    proc = procs.spawn(f"gateway-{tag}", argv, log_path, env=env, cwd=work)
    try:
        # printed once every worker serves
        line = wait_log_line(proc, log_path, f"openeas-gateway {name} ready", 60, f"the gateway ({tag})")
    except AssertionError as exc:
        raise GatewayStartError(str(exc)[-1000:]) from None
    port = parse_gateway_ready_line(line)[0]["internet"]
    gw = PrivateGateway(proc, name, port, store_url, f"http://127.0.0.1:{port}/api/predict/{service}")
    status = call(f"{gw.base}/get", auth=token).status
    if status != 200:
        raise GatewayStartError(f"the gateway ({tag}) answered {status}")
    return gw
