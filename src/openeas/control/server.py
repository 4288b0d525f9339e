"""`openeas server`: the control API, the reconciler and the gateway supervisor in one process.

Startup: refuse a second server on the same data dir and ports that are taken (with a message
saying which flag to change), create the admin token, the registry and the `shared` gateway
record, bind the API socket (a gateway port that a gateway this registry's previous server left
running listens on is fine), write `<data_dir>/server.json`, and once leading adopt the
instances and gateways a previous server left running (docs/distributed.md, "Adoption"), then
run the API (uvicorn), the reconciler and the gateway process(es) in one asyncio loop.
SIGINT/SIGTERM: stop the API, stop the instances (SIGTERM, then SIGKILL after the grace period;
a second signal kills them at once), stop the gateway, remove server.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import uvicorn

from openeas.config import SERVER_FILE, ServerConfig, ensure_admin_token
from openeas.control.autoscaler import Autoscaler
from openeas.control.context import ControlContext
from openeas.control.eas_api import mount_eas_api
from openeas.control.errors import log_failure
from openeas.control.gateways import (
    GatewayManager,
    GatewaySupervisor,
    SupervisorSettings,
    gateway_listeners,
    supervised_gateways,
)
from openeas.control.leadership import Leadership
from openeas.control.ops import ControlOps
from openeas.control.ops.gateways import gateway_processes
from openeas.control.queue_servers import QueueServers  # async queue hook
from openeas.control.reconciler import Reconciler, ReconcilerSettings
from openeas.control.replica_metrics import ReplicaMetrics
from openeas.control.rest.app import create_app
from openeas.control.telemetry import Telemetry
from openeas.procfs import pid_alive, stdout_path
from openeas.runtime.base import Runtime
from openeas.runtime.factory import make_runtime
from openeas.runtime.local import LocalRuntime
from openeas.runtime.orphans import sweep_orphans, sweep_queue_servers
from openeas.spec import shared_gateway_spec
from openeas.store import Registry, sqlite_url
from openeas.store.leases import FencedRegistry
from openeas.store.migrate import SchemaTooNew

log = logging.getLogger("openeas.control")

SHARED = "shared"


# Where instances run: the one place the control plane names a runtime. Everything after it
# (reconciler, API, logs) sees only the `runtime.base.Runtime` interface.
RuntimeFactory = Callable[[ServerConfig], Runtime]


def local_runtime(config: ServerConfig) -> Runtime:
    """Instances as subprocesses of this server."""
    return LocalRuntime(config.data_dir)


def configured_runtime(config: ServerConfig) -> Runtime:
    """The runtime `--runtime` names (local by default; ray: actors on the `--ray-address` cluster)."""
    try:
        return make_runtime(config.runtime, config.data_dir, config.ray_address)
    except ValueError as exc:
        raise ServerError(str(exc)) from None
    except ConnectionError as exc:
        raise ServerError(f"cannot reach the Ray cluster at {config.ray_address}: {exc}") from None


class ServerError(Exception):
    """The server cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class ServerInfo:
    """What a running server tells `on_ready` (and `openeas up`)."""

    api_url: str
    admin_token: str
    region: str
    data_dir: Path
    internet_url: str
    vpc_url: str


# -- startup checks --------------------------------------------------------------------------


def read_server_file(data_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((data_dir / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_no_other_server(data_dir: Path) -> None:
    info = read_server_file(data_dir)
    if not info:
        return
    pid = info.get("pid")
    if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
        raise ServerError(
            f"another openeas server (pid {pid}, API {info.get('api')}) already runs on data dir "
            f"{data_dir}; stop it first, or give this one another --data-dir"
        )
    # A stale file: a server that was killed. Its gateways and instances outlived it on purpose:
    # this server adopts them once it leads (or replaces them when their config changed).


def held_by_our_gateway(store_url: str, port: int) -> bool:
    """True when a gateway that a server started for this registry, still running on this
    machine (to be adopted), listens on `port`."""
    for pid in supervised_gateways(store_url):
        path = stdout_path(pid)
        listeners = gateway_listeners(path) if path else {}
        if any(address.rsplit(":", 1)[-1] == str(port) for address in listeners.values()):
            return True
    return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _port_problem(what: str, host: str, port: int, flag: str, exc: OSError) -> ServerError:
    why = "it is taken (another program listens there)" if exc.errno == 98 else (exc.strerror or str(exc))
    return ServerError(f"cannot listen on {host}:{port} for the {what}: {why}; pick another port with {flag}")


def check_ports(
    config: ServerConfig, held: Callable[[int], bool] = lambda _port: False
) -> tuple[socket.socket, ServerConfig]:
    """Bind the API socket (kept) and check the gateway ports (released for the gateway). A
    gateway port that `held` says a running gateway of ours listens on is fine: that gateway is
    adopted, not started again.

    Port 0 means "any free port"; the returned config has the actual ports.
    """
    nonzero = [p for p in (config.api_port, config.gateway_port, config.vpc_port) if p]
    if len(nonzero) != len(set(nonzero)):
        raise ServerError(
            f"the API, gateway and VPC ports must differ (got --api-port {config.api_port}, "
            f"--gateway-port {config.gateway_port}, --vpc-port {config.vpc_port})"
        )
    try:
        api = _bind(config.api_host, config.api_port)
    except OSError as exc:
        raise _port_problem("control API", config.api_host, config.api_port, "--api-port", exc) from None
    api.listen(128)
    ports = {"api_port": api.getsockname()[1]}
    bound = []
    try:
        for host, port, what, flag, key in (
            (config.internet_bind, config.gateway_port, "Internet gateway", "--gateway-port", "gateway_port"),
            (config.vpc_bind, config.vpc_port, "VPC gateway", "--vpc-port", "vpc_port"),
        ):
            try:
                sock = _bind(host, port)
            except OSError as exc:
                if port and exc.errno == errno.EADDRINUSE and held(port):
                    ports[key] = port
                    continue
                raise _port_problem(what, host, port, flag, exc) from None
            bound.append(sock)
            ports[key] = sock.getsockname()[1]
    except ServerError:
        api.close()
        raise
    finally:
        for sock in bound:
            sock.close()
    return api, replace(config, **ports)


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _url(host: str, port: int) -> str:
    host = _client_host(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# -- the server ------------------------------------------------------------------------------


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the server's loop owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ControlServer:
    def __init__(
        self,
        config: ServerConfig,
        on_ready: Callable[[ServerInfo], int | None] | None = None,
        settings: ReconcilerSettings | None = None,
        runtime_factory: RuntimeFactory = configured_runtime,
    ):
        self.config = replace(config, data_dir=config.data_dir.expanduser().resolve())
        self.on_ready = on_ready
        self.settings = settings or ReconcilerSettings()
        self.runtime_factory = runtime_factory
        self.exit_code = 0
        self._stop = asyncio.Event()
        self._force = False
        self.gateways: GatewayManager | None = None
        self.leadership: Leadership | None = None
        self._shared_spec: dict[str, Any] = {}

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def run(self) -> int:
        data_dir = self.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            check_no_other_server(data_dir)
            admin_token = ensure_admin_token(data_dir)
        except OSError as exc:
            raise ServerError(
                f"cannot use data dir {data_dir}: {exc.strerror or exc}; pick another with --data-dir"
            ) from None
        store_url = self.config.store_url or sqlite_url(data_dir)
        api_sock, self.config = check_ports(self.config, lambda port: held_by_our_gateway(store_url, port))
        cfg = self.config
        try:
            registry = Registry(store_url)
            registry.create_schema()
        except SchemaTooNew as exc:
            api_sock.close()
            raise ServerError(f"cannot open the registry: {exc}") from None
        except Exception as exc:
            api_sock.close()
            raise ServerError(f"cannot open the registry ({type(exc).__name__}: {exc})") from None
        internet_url = _url(cfg.internet_host, cfg.gateway_port)
        vpc_url = _url(cfg.vpc_host, cfg.vpc_port)
        shared = shared_gateway_spec(
            f"{cfg.internet_bind}:{cfg.gateway_port}",
            f"{cfg.vpc_bind}:{cfg.vpc_port}",
            internet_url,
            vpc_url,
        )
        self._shared_spec = shared.to_json()  # written to the store when this server leads
        info = ServerInfo(
            api_url=_url(cfg.api_host, cfg.api_port),
            admin_token=admin_token,
            region=cfg.region,
            data_dir=data_dir,
            internet_url=internet_url,
            vpc_url=vpc_url,
        )
        try:
            return asyncio.run(self._serve(info, registry, store_url, api_sock))
        finally:
            registry.close()
            api_sock.close()
            self._remove_server_file()

    # -- server.json -----------------------------------------------------------------------
    def _write_server_file(self, info: ServerInfo) -> None:
        data = {
            "api": info.api_url,
            "pid": os.getpid(),
            "region": info.region,
            "gateway": {"internet": info.internet_url, "vpc": info.vpc_url},
            "gateway_pids": self.gateways.leader_pids() if self.gateways is not None else [],
            "role": "leader" if self.leadership is not None and self.leadership.leading else "follower",
        }
        path = self.data_dir / SERVER_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        tmp.replace(path)

    def _remove_server_file(self) -> None:
        info = read_server_file(self.data_dir)
        if info and info.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                (self.data_dir / SERVER_FILE).unlink()

    # -- the loop --------------------------------------------------------------------------
    def request_stop(self, code: int | None = None) -> None:
        if code is not None:
            self.exit_code = code
        if self._stop.is_set():
            self._force = True
            log.warning("second stop request: killing instances now")
        self._stop.set()

    async def _serve(self, info: ServerInfo, registry: Registry, store_url: str, sock: socket.socket) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        runtime = self.runtime_factory(self.config)
        # Ports this server picked (`--gateway-port 0`...) that its gateways bind only later: the
        # kernel would hand them out again meanwhile, to an instance or a queue server
        reserved = {self.config.api_port, self.config.gateway_port, self.config.vpc_port}
        if isinstance(runtime, LocalRuntime):
            runtime.registry_id = await asyncio.to_thread(registry.identity)  # LocalRuntime.find
            runtime.reserved_ports = reserved
        self.leadership = leadership = Leadership(registry, info.api_url)
        # the reconciler's writes carry the leader's fencing token (refused once another leads)
        reconciler = Reconciler(FencedRegistry(registry, leadership.fence), runtime, self.settings)

        def pids_changed() -> None:
            self._write_server_file(info)

        gateways = GatewayManager(
            registry,
            store_url,
            self.data_dir / "logs" / "gateway",
            # --redis-url: the gateways share their limits in Redis (docs/gateway.md)
            settings=SupervisorSettings(redis_url=self.config.redis_url or None),
            on_pids=pids_changed,
        )
        self.gateways = gateways
        replicas = ReplicaMetrics(registry)  # `openeas gateway run` replicas, read like our gateways
        telemetry = Telemetry(lambda: _metrics_addresses(gateways) + replicas.current())
        ctx = ControlContext(
            self.config, registry, reconciler, runtime, info.admin_token, gateways, telemetry=telemetry,
            leadership=leadership,
        )
        # hook (mgmt): EAS's management API in front of the control API (control/eas_api)
        app = mount_eas_api(create_app(ctx), self.config, registry.engine, info.admin_token)
        # scales through the service layer, like `POST .../scale`; wakes at once on held requests
        ctx.autoscaler = autoscaler = Autoscaler(registry, telemetry, ControlOps(ctx).services.scale)
        # async queue hook: a queue server per Async service; the autoscaler reads their backlog
        queues = QueueServers(
            registry, store_url, self.data_dir / "logs", self.config.redis_url, reserved_ports=reserved
        )
        autoscaler.queues = queues
        uv = _Uvicorn(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        await leadership.attempt()  # the first round before serving: on SQLite this server leads now
        tasks = [asyncio.create_task(uv.serve(sockets=[sock]), name="api")]
        lease_task = asyncio.create_task(leadership.run(), name="leader lease")
        # What runs once per registry starts when this server leads (at once, or after a failover).
        leader_task = asyncio.create_task(
            self._lead(
                info, registry, leadership, reconciler, gateways, telemetry, autoscaler, queues, tasks
            ),
            name="leader",
        )
        if not leadership.leading:
            self._write_server_file(info)
            ready_task = asyncio.create_task(self._announce(info, None), name="ready")
        else:
            ready_task = asyncio.create_task(asyncio.sleep(0))
        stop_task = asyncio.create_task(self._stop.wait())
        watched = [stop_task, tasks[0], lease_task, leader_task]
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        while leader_task in done and leader_task.exception() is None and len(done) == 1:
            done, _ = await asyncio.wait(watched[:3], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_task and not task.cancelled() and task.exception() is not None:
                log_failure(log, f"{task.get_name()} failed", task.exception() or Exception())
                self.exit_code = 1
        lost = leadership.lost.is_set()
        if lost:
            # Another server leads: it owns the instances now. Stop serving, leave them running.
            log.error("stopping: this server no longer leads (restart it to serve as a follower)")
            self.exit_code = 1
        else:
            log.info("stopping: API, instances, gateways")
        leader_task.cancel()
        ready_task.cancel()
        uv.should_exit = True
        telemetry.stop()
        for task in tasks[1:]:
            if task.get_name() == "autoscaler":
                task.cancel()  # no scaling while the instances stop
        stopping = asyncio.create_task(self._shutdown(reconciler, gateways, tasks, keep_instances=lost))
        while not stopping.done():
            # A second Ctrl-C shortens the instances' grace period to nothing.
            await asyncio.wait([stopping], timeout=0.1)
            if self._force:
                self._force = False
                await reconciler.kill_now()
        await stopping
        stop_task.cancel()
        await leadership.stop()
        lease_task.cancel()
        log.info("stopped")
        return self.exit_code

    async def _lead(
        self,
        info: ServerInfo,
        registry: Registry,
        leadership: Leadership,
        reconciler: Reconciler,
        gateways: GatewayManager,
        telemetry: Telemetry,
        autoscaler: Autoscaler,
        queues: QueueServers,
        tasks: list[asyncio.Task[Any]],
    ) -> None:
        """Once this server leads: the shared gateway record from its flags, the instances a
        previous leader left, the gateways, then the reconciler, telemetry and autoscaler."""
        await leadership.became_leader.wait()
        await asyncio.to_thread(registry.put_gateway, SHARED, self._shared_spec)
        if isinstance(reconciler.runtime, LocalRuntime):  # instances with no row: a crash's orphans
            await sweep_orphans(reconciler.runtime.data_dir, registry)
        await sweep_queue_servers(queues.store_url)  # a killed server's, before ours start
        await reconciler.recover()
        shared = gateways.start(SHARED)
        await self._start_dedicated(registry, gateways)
        # gateways a previous server left for records that are gone (deleted meanwhile)
        await gateways.stop_strays()
        self._write_server_file(info)
        tasks += [
            asyncio.create_task(reconciler.run(), name="reconciler"),
            asyncio.create_task(telemetry.run(), name="telemetry"),
            asyncio.create_task(autoscaler.run(), name="autoscaler"),
            asyncio.create_task(queues.run(), name="queues"),  # async queue hook
        ]
        await self._announce(info, shared)

    async def _start_dedicated(self, registry: Registry, gateways: GatewayManager) -> None:
        """Start the dedicated gateways of the store; finish deletes a previous server left."""
        for record in await asyncio.to_thread(registry.list_gateways):
            if record.name == SHARED:
                continue
            if record.status == "Deleting":
                bound = await asyncio.to_thread(registry.delete_unused_gateway, record.name)
                if not bound:
                    log.info("gateway %s: deleted (its delete was interrupted)", record.name)
                    continue
            gateways.start(record.name, gateway_processes(record.spec))

    async def _shutdown(
        self,
        reconciler: Reconciler,
        gateways: GatewayManager,
        tasks: list[asyncio.Task[Any]],
        keep_instances: bool = False,
    ) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(tasks[0]), 5)
        if not keep_instances:
            await reconciler.shutdown()
        await gateways.stop_all()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _announce(self, info: ServerInfo, gateway: GatewaySupervisor | None) -> None:
        """Log "ready" and run on_ready: once the shared gateway serves (leader), or at once
        (a follower: it serves the API; the leader's gateways serve the traffic)."""
        if gateway is not None:
            try:
                await asyncio.wait_for(gateway.ready.wait(), 30)
            except TimeoutError:
                log.error("gateway %s is not ready after 30 s; still trying (see the messages above)", SHARED)
                await gateway.ready.wait()
        role = "leader" if gateway is not None else "follower"
        log.info("ready (%s): API %s, data dir %s", role, info.api_url, info.data_dir)
        if self.on_ready is None:
            return
        try:
            code = await asyncio.to_thread(self.on_ready, info)
        except Exception as exc:
            log_failure(log, "startup action failed", exc)
            code = 1
        if code is not None:
            self.request_stop(code)


def _metrics_addresses(gateways: GatewayManager) -> list[str]:
    """The metrics listeners of every gateway process (what the telemetry reads)."""
    return [a for name in gateways.names() if (sup := gateways.get(name)) for a in sup.metrics_addresses()]


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger("openeas")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s openeas %(levelname)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


def run_server(
    config: ServerConfig,
    on_ready: Callable[[ServerInfo], int | None] | None = None,
    settings: ReconcilerSettings | None = None,
    runtime_factory: RuntimeFactory = configured_runtime,
) -> int:
    """Run `openeas server` until SIGINT/SIGTERM; returns the exit code. Raises ServerError
    (with a message for the user) when it cannot start."""
    return ControlServer(config, on_ready, settings, runtime_factory).run()
